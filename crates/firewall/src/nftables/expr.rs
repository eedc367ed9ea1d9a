//! nf_tables expressions: the kernel's rule "bytecode", one typed variant per expression
//! kind, encoded exactly as `nft` (libnftnl) encodes them so that `nft list` shows our rules
//! the way it shows its own.
//!
//! A rule is a list of expressions working on registers: loads (`payload`, `meta`, `ct`,
//! `immediate`) write a register, `cmp`/`lookup`/`range` test one (and stop the rule when
//! the test fails), `bitwise` transforms one, and statements (`nat`, `masq`, `redir`,
//! `counter`, or an `immediate` into the verdict register) act. What `nft --debug=netlink`
//! prints as `[ payload load 4b @ network header + 12 => reg 1 ]` is
//! `Expr::Payload(Payload::load(PayloadBase::Network, 12, 4, Reg::R1))`.
//!
//! Values (`cmp` data, set keys, `immediate` data) are raw bytes in the order the kernel
//! compares them: addresses and ports in network order, `meta`/`ct` keys such as
//! `nfproto`, `l4proto` or `mark` in host order (see [`super::matches`] for helpers).

use super::attr::{self, Writer};

// Expression list and generic expression attributes.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
// Data attributes.
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// A register. The verdict register takes verdicts; `R1`..`R4` are the 16-byte data
/// registers `nft` uses (what `nft --debug=netlink` prints as `reg 1`..`reg 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg(pub u32);

impl Reg {
    /// `NFT_REG_VERDICT`.
    pub const VERDICT: Reg = Reg(0);
    /// `NFT_REG_1`.
    pub const R1: Reg = Reg(1);
    /// `NFT_REG_2`.
    pub const R2: Reg = Reg(2);
    /// `NFT_REG_3`.
    pub const R3: Reg = Reg(3);
    /// `NFT_REG_4`.
    pub const R4: Reg = Reg(4);
}

/// A verdict: what a rule (or a verdict-map element) decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `accept` (`NF_ACCEPT`).
    Accept,
    /// `drop` (`NF_DROP`).
    Drop,
    /// `continue` (`NFT_CONTINUE`).
    Continue,
    /// `return` (`NFT_RETURN`).
    Return,
    /// `jump <chain>` (`NFT_JUMP`).
    Jump(String),
    /// `goto <chain>` (`NFT_GOTO`).
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    /// Writes `NFTA_DATA_VERDICT { CODE, [CHAIN] }` into `w` (the inside of a data attribute).
    pub(crate) fn write_data(&self, w: &mut Writer) {
        w.nested(NFTA_DATA_VERDICT, |v| {
            v.u32(NFTA_VERDICT_CODE, self.code() as u32);
            if let Verdict::Jump(c) | Verdict::Goto(c) = self {
                v.str(NFTA_VERDICT_CHAIN, c);
            }
        });
    }

    /// Parses the inside of `NFTA_DATA_VERDICT`.
    pub(crate) fn parse(v: &[u8]) -> Option<Verdict> {
        let code = attr::find_u32(v, NFTA_VERDICT_CODE)? as i32;
        let chain = || attr::find_str(v, NFTA_VERDICT_CHAIN).unwrap_or_default();
        Some(match code {
            0 => Verdict::Drop,
            1 => Verdict::Accept,
            -1 => Verdict::Continue,
            -3 => Verdict::Jump(chain()),
            -4 => Verdict::Goto(chain()),
            -5 => Verdict::Return,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// A data value: raw bytes or a verdict (`NFTA_DATA_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// `NFTA_DATA_VALUE`.
    Value(Vec<u8>),
    /// `NFTA_DATA_VERDICT`.
    Verdict(Verdict),
}

impl Data {
    pub(crate) fn write(&self, w: &mut Writer, kind: u16) {
        w.nested(kind, |d| match self {
            Data::Value(v) => {
                d.bytes(NFTA_DATA_VALUE, v);
            }
            Data::Verdict(v) => v.write_data(d),
        });
    }

    pub(crate) fn parse(v: &[u8]) -> Option<Data> {
        if let Some(value) = attr::find(v, NFTA_DATA_VALUE) {
            return Some(Data::Value(value.to_vec()));
        }
        attr::find(v, NFTA_DATA_VERDICT)
            .and_then(Verdict::parse)
            .map(Data::Verdict)
    }
}

/// Where a payload offset counts from (`NFT_PAYLOAD_*_HEADER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    /// Link layer (Ethernet) header.
    LinkLayer = 0,
    /// Network (IP) header.
    Network = 1,
    /// Transport (TCP/UDP/...) header.
    Transport = 2,
}

/// `payload`: load `len` bytes at `offset` of a header into a register, or write a
/// register back into the packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payload {
    /// Header the offset is relative to.
    pub base: PayloadBase,
    /// Byte offset.
    pub offset: u32,
    /// Byte count.
    pub len: u32,
    /// Load into this register (`None` for a write).
    pub dreg: Option<Reg>,
    /// Write from this register (payload mangling).
    pub sreg: Option<Reg>,
    /// Checksum to fix after a write: (type, offset, flags), e.g. `(1, 10, 0)` for the IPv4
    /// header checksum (`NFT_PAYLOAD_CSUM_INET` at offset 10).
    pub csum: Option<(u32, u32, u32)>,
}

impl Payload {
    /// `payload load <len>b @ <base> + <offset> => <dreg>`.
    pub fn load(base: PayloadBase, offset: u32, len: u32, dreg: Reg) -> Self {
        Self {
            base,
            offset,
            len,
            dreg: Some(dreg),
            sreg: None,
            csum: None,
        }
    }
}

/// `meta` keys (`NFT_META_*`), the ones worth naming; any other is `Other(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// Packet length.
    Len,
    /// Ethertype (`meta protocol`).
    Protocol,
    /// Packet mark.
    Mark,
    /// Input interface index.
    Iif,
    /// Output interface index.
    Oif,
    /// Input interface name (16 bytes, NUL-padded).
    IifName,
    /// Output interface name.
    OifName,
    /// Netfilter family of the packet (`NFPROTO_IPV4`/`_IPV6`) in `inet` chains.
    NfProto,
    /// Layer-4 protocol number.
    L4Proto,
    /// Any other key (its number).
    Other(u32),
}

impl MetaKey {
    fn number(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::Other(n) => n,
        }
    }

    fn from_number(n: u32) -> Self {
        match n {
            0 => MetaKey::Len,
            1 => MetaKey::Protocol,
            3 => MetaKey::Mark,
            4 => MetaKey::Iif,
            5 => MetaKey::Oif,
            6 => MetaKey::IifName,
            7 => MetaKey::OifName,
            15 => MetaKey::NfProto,
            16 => MetaKey::L4Proto,
            n => MetaKey::Other(n),
        }
    }
}

/// `meta`: load packet metadata into a register, or set it (mark, ...) from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Which metadata.
    pub key: MetaKey,
    /// Load into this register.
    pub dreg: Option<Reg>,
    /// Set from this register (`meta mark set ...`).
    pub sreg: Option<Reg>,
}

/// `ct` keys (`NFT_CT_*`), the ones worth naming; any other is `Other(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    /// Connection state bits (`ct state`).
    State,
    /// Direction.
    Direction,
    /// Status bits (`ct status`, e.g. dnat).
    Status,
    /// Connection mark.
    Mark,
    /// Any other key (its number).
    Other(u32),
}

impl CtKey {
    fn number(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Other(n) => n,
        }
    }

    fn from_number(n: u32) -> Self {
        match n {
            0 => CtKey::State,
            1 => CtKey::Direction,
            2 => CtKey::Status,
            3 => CtKey::Mark,
            n => CtKey::Other(n),
        }
    }
}

/// `ct`: load conntrack data into a register, or set it (ct mark) from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ct {
    /// Which conntrack data.
    pub key: CtKey,
    /// Load into this register.
    pub dreg: Option<Reg>,
    /// Set from this register.
    pub sreg: Option<Reg>,
    /// Direction (0 original, 1 reply) for per-direction keys.
    pub direction: Option<u8>,
}

/// Comparison operators (`NFT_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
    /// `<`.
    Lt = 2,
    /// `<=`.
    Lte = 3,
    /// `>`.
    Gt = 4,
    /// `>=`.
    Gte = 5,
}

impl CmpOp {
    fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

/// `cmp`: compare a register with a value; the rule stops when false.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cmp {
    /// Register compared.
    pub sreg: Reg,
    /// Operator.
    pub op: CmpOp,
    /// Value, as many bytes as were loaded.
    pub data: Vec<u8>,
}

/// `bitwise`: `dreg = (sreg & mask) ^ xor` over `len` bytes.
///
/// Equality (and hashing) treats an absent `op` as [`Bitwise::BOOL`], the kernel's default:
/// kernels since 5.6 dump the attribute whether it was sent or not.
#[derive(Debug, Clone)]
pub struct Bitwise {
    /// Input register.
    pub sreg: Reg,
    /// Output register.
    pub dreg: Reg,
    /// Byte count.
    pub len: u32,
    /// AND mask (`len` bytes).
    pub mask: Vec<u8>,
    /// XOR value (`len` bytes).
    pub xor: Vec<u8>,
    /// `NFTA_BITWISE_OP`: nft sends [`Bitwise::BOOL`] for `and`/`or`/`xor` statements
    /// (`meta mark set meta mark or 0x10`) and nothing for prefix and flag matches. Kernels
    /// before 5.6 do not know the attribute and ignore it (it is their only operation).
    pub op: Option<u32>,
}

impl Bitwise {
    /// `NFT_BITWISE_BOOL` (mask and xor; newer kernels call it `MASK_XOR`).
    pub const BOOL: u32 = 0;

    /// `dreg = (sreg & mask) ^ xor` on register 1, with the operation sent as nft does
    /// for `and`/`or` expressions.
    pub fn mask_xor(mask: Vec<u8>, xor: Vec<u8>) -> Self {
        Self {
            sreg: Reg::R1,
            dreg: Reg::R1,
            len: mask.len() as u32,
            mask,
            xor,
            op: Some(Self::BOOL),
        }
    }

    fn key(&self) -> (Reg, Reg, u32, &[u8], &[u8], u32) {
        (
            self.sreg,
            self.dreg,
            self.len,
            &self.mask,
            &self.xor,
            self.op.unwrap_or(Self::BOOL),
        )
    }
}

impl PartialEq for Bitwise {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Bitwise {}

impl std::hash::Hash for Bitwise {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// `fib` flags and results (`NFTA_FIB_F_*`, `NFT_FIB_RESULT_*`).
pub mod fib {
    /// Look up the source address.
    pub const F_SADDR: u32 = 1;
    /// Look up the destination address.
    pub const F_DADDR: u32 = 2;
    /// Use the packet mark.
    pub const F_MARK: u32 = 4;
    /// Restrict to the input interface.
    pub const F_IIF: u32 = 8;
    /// Restrict to the output interface.
    pub const F_OIF: u32 = 16;
    /// The output interface index.
    pub const RESULT_OIF: u32 = 1;
    /// The output interface name.
    pub const RESULT_OIFNAME: u32 = 2;
    /// The address type (`RTN_*`: 1 unicast, 2 local, 3 broadcast, ...).
    pub const RESULT_ADDRTYPE: u32 = 3;
    /// `RTN_LOCAL`: an address of this host.
    pub const RTN_LOCAL: u32 = 2;
}

/// `fib`: a routing (FIB) lookup of the packet's address (Linux 4.10), e.g. `fib daddr
/// type` (is the destination one of this host's addresses?).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fib {
    /// What to look up ([`fib`]`::F_*`).
    pub flags: u32,
    /// What to load ([`fib`]`::RESULT_*`).
    pub result: u32,
    /// Destination register.
    pub dreg: Reg,
}

/// `lookup`: look a register up in a set (the rule stops when absent, or when present with
/// `invert`); with a map and `dreg` (the verdict register for a verdict map) the element's
/// data is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lookup {
    /// Set name.
    pub set: String,
    /// Set id, to refer to a set created in the same batch.
    pub set_id: Option<u32>,
    /// Key register.
    pub sreg: Reg,
    /// Register receiving the element's data (maps).
    pub dreg: Option<Reg>,
    /// Match when the key is *not* in the set.
    pub invert: bool,
}

/// `immediate`: load a constant (or a verdict) into a register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Immediate {
    /// Destination register ([`Reg::VERDICT`] for a verdict).
    pub dreg: Reg,
    /// The constant.
    pub data: Data,
}

impl Immediate {
    /// A verdict statement (`accept`, `drop`, `jump x`, ...).
    pub fn verdict(v: Verdict) -> Self {
        Self {
            dreg: Reg::VERDICT,
            data: Data::Verdict(v),
        }
    }

    /// A constant into `dreg`.
    pub fn value(dreg: Reg, bytes: Vec<u8>) -> Self {
        Self {
            dreg,
            data: Data::Value(bytes),
        }
    }
}

/// NAT range flags (`NF_NAT_RANGE_*`).
pub mod nat_flags {
    /// `NF_NAT_RANGE_MAP_IPS`: an address range is given.
    pub const MAP_IPS: u32 = 1;
    /// `NF_NAT_RANGE_PROTO_SPECIFIED`: a port range is given.
    pub const PROTO_SPECIFIED: u32 = 2;
    /// `NF_NAT_RANGE_PROTO_RANDOM`.
    pub const PROTO_RANDOM: u32 = 4;
    /// `NF_NAT_RANGE_PERSISTENT`.
    pub const PERSISTENT: u32 = 8;
    /// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
    pub const PROTO_RANDOM_FULLY: u32 = 16;
}

/// Source or destination NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    /// `snat`.
    Snat = 0,
    /// `dnat`.
    Dnat = 1,
}

/// `nat`: SNAT/DNAT to the address (and port) held in registers.
///
/// Equality (and hashing) is the kernel's view: an absent `addr_max`/`proto_max` is the
/// min register, and the `MAP_IPS`/`PROTO_SPECIFIED` flags follow from the registers
/// given (the kernel fills both in and dumps them).
#[derive(Debug, Clone, Copy)]
pub struct Nat {
    /// snat or dnat.
    pub kind: NatType,
    /// Address family of the addresses (`NFPROTO_IPV4` = 2, `NFPROTO_IPV6` = 10).
    pub family: u32,
    /// Register holding the (first) address.
    pub addr_min: Option<Reg>,
    /// Register holding the last address of a range.
    pub addr_max: Option<Reg>,
    /// Register holding the (first) port, network order in 2 bytes.
    pub proto_min: Option<Reg>,
    /// Register holding the last port of a range.
    pub proto_max: Option<Reg>,
    /// `NF_NAT_RANGE_*` flags ([`nat_flags`]); 0 to send none.
    pub flags: u32,
}

impl Nat {
    fn key(&self) -> (NatType, u32, [Option<Reg>; 4], u32) {
        let mut flags = self.flags;
        if self.addr_min.is_some() {
            flags |= nat_flags::MAP_IPS;
        }
        if self.proto_min.is_some() {
            flags |= nat_flags::PROTO_SPECIFIED;
        }
        (
            self.kind,
            self.family,
            [
                self.addr_min,
                self.addr_max.or(self.addr_min),
                self.proto_min,
                self.proto_max.or(self.proto_min),
            ],
            flags,
        )
    }
}

impl PartialEq for Nat {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Nat {}

impl std::hash::Hash for Nat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// `masq`: masquerade (SNAT to the outgoing interface's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Masq {
    /// `NF_NAT_RANGE_*` flags (e.g. random, persistent); 0 to send none.
    pub flags: u32,
    /// Register holding the first port of a port range.
    pub proto_min: Option<Reg>,
    /// Register holding the last port of a port range.
    pub proto_max: Option<Reg>,
}

/// `redir`: DNAT to the local host (optionally to a port held in registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Redir {
    /// Register holding the first port.
    pub proto_min: Option<Reg>,
    /// Register holding the last port.
    pub proto_max: Option<Reg>,
    /// `NF_NAT_RANGE_*` flags; 0 to send none.
    pub flags: u32,
}

/// One expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `payload`.
    Payload(Payload),
    /// `meta`.
    Meta(Meta),
    /// `ct`.
    Ct(Ct),
    /// `cmp`.
    Cmp(Cmp),
    /// `bitwise`.
    Bitwise(Bitwise),
    /// `fib`.
    Fib(Fib),
    /// `lookup`.
    Lookup(Lookup),
    /// `immediate`.
    Immediate(Immediate),
    /// `nat`.
    Nat(Nat),
    /// `masq`.
    Masq(Masq),
    /// `redir`.
    Redir(Redir),
    /// `counter` with its starting values.
    Counter {
        /// Bytes.
        bytes: u64,
        /// Packets.
        packets: u64,
    },
    /// An expression this encoder does not model, kept as its name and raw attributes
    /// (decoding only; encoding writes it back unchanged).
    Other {
        /// Expression name (`log`, `limit`, ...).
        name: String,
        /// Its `NFTA_EXPR_DATA` attributes.
        data: Vec<u8>,
    },
}

fn put_reg(w: &mut Writer, kind: u16, r: Option<Reg>) {
    if let Some(r) = r {
        w.u32(kind, r.0);
    }
}

fn reg(data: &[u8], kind: u16) -> Option<Reg> {
    attr::find_u32(data, kind).map(Reg)
}

impl Expr {
    /// The expression's kernel name.
    pub fn name(&self) -> &str {
        match self {
            Expr::Payload(_) => "payload",
            Expr::Meta(_) => "meta",
            Expr::Ct(_) => "ct",
            Expr::Cmp(_) => "cmp",
            Expr::Bitwise(_) => "bitwise",
            Expr::Fib(_) => "fib",
            Expr::Lookup(_) => "lookup",
            Expr::Immediate(_) => "immediate",
            Expr::Nat(_) => "nat",
            Expr::Masq(_) => "masq",
            Expr::Redir(_) => "redir",
            Expr::Counter { .. } => "counter",
            Expr::Other { name, .. } => name,
        }
    }

    /// Writes `NFTA_LIST_ELEM { NAME, DATA { .. } }`, attributes in libnftnl's order.
    pub(crate) fn write(&self, w: &mut Writer) {
        w.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, self.name());
            if let Expr::Other { data, .. } = self {
                e.bytes(NFTA_EXPR_DATA | 0x8000, data);
                return;
            }
            e.nested(NFTA_EXPR_DATA, |d| self.write_data(d));
        });
    }

    fn write_data(&self, d: &mut Writer) {
        match self {
            Expr::Payload(p) => {
                put_reg(d, 5, p.sreg);
                put_reg(d, 1, p.dreg);
                d.u32(2, p.base as u32).u32(3, p.offset).u32(4, p.len);
                if let Some((t, o, f)) = p.csum {
                    d.u32(6, t).u32(7, o);
                    if f != 0 {
                        d.u32(8, f);
                    }
                }
            }
            Expr::Meta(m) => {
                d.u32(2, m.key.number());
                put_reg(d, 1, m.dreg);
                put_reg(d, 3, m.sreg);
            }
            Expr::Ct(c) => {
                d.u32(2, c.key.number());
                put_reg(d, 1, c.dreg);
                if let Some(dir) = c.direction {
                    d.bytes(3, &[dir]);
                }
                put_reg(d, 4, c.sreg);
            }
            Expr::Cmp(c) => {
                d.u32(1, c.sreg.0).u32(2, c.op as u32);
                Data::Value(c.data.clone()).write(d, 3);
            }
            Expr::Bitwise(b) => {
                d.u32(1, b.sreg.0).u32(2, b.dreg.0);
                if let Some(op) = b.op {
                    d.u32(6, op);
                }
                d.u32(3, b.len);
                Data::Value(b.mask.clone()).write(d, 4);
                Data::Value(b.xor.clone()).write(d, 5);
            }
            Expr::Fib(f) => {
                d.u32(3, f.flags).u32(2, f.result).u32(1, f.dreg.0);
            }
            Expr::Lookup(l) => {
                d.u32(2, l.sreg.0);
                put_reg(d, 3, l.dreg);
                d.str(1, &l.set);
                if let Some(id) = l.set_id {
                    d.u32(4, id);
                }
                if l.invert {
                    d.u32(5, 1);
                }
            }
            Expr::Immediate(i) => {
                d.u32(1, i.dreg.0);
                i.data.write(d, 2);
            }
            Expr::Nat(n) => {
                d.u32(1, n.kind as u32).u32(2, n.family);
                put_reg(d, 3, n.addr_min);
                put_reg(d, 4, n.addr_max);
                put_reg(d, 5, n.proto_min);
                put_reg(d, 6, n.proto_max);
                if n.flags != 0 {
                    d.u32(7, n.flags);
                }
            }
            Expr::Masq(m) => {
                if m.flags != 0 {
                    d.u32(1, m.flags);
                }
                put_reg(d, 2, m.proto_min);
                put_reg(d, 3, m.proto_max);
            }
            Expr::Redir(r) => {
                put_reg(d, 1, r.proto_min);
                put_reg(d, 2, r.proto_max);
                if r.flags != 0 {
                    d.u32(3, r.flags);
                }
            }
            // nft sends a new counter without attributes (it starts at zero).
            Expr::Counter { bytes, packets } if *bytes != 0 || *packets != 0 => {
                d.u64(1, *bytes).u64(2, *packets);
            }
            Expr::Counter { .. } => {}
            Expr::Other { .. } => {}
        }
    }

    /// Parses one `NFTA_LIST_ELEM` (the inside); unknown or malformed expressions come back
    /// as [`Expr::Other`].
    pub(crate) fn parse(elem: &[u8]) -> Expr {
        let name = attr::find_str(elem, NFTA_EXPR_NAME).unwrap_or_default();
        let data = attr::find(elem, NFTA_EXPR_DATA).unwrap_or_default();
        Self::parse_data(&name, data).unwrap_or_else(|| Expr::Other {
            name,
            data: data.to_vec(),
        })
    }

    fn parse_data(name: &str, d: &[u8]) -> Option<Expr> {
        let u = |k| attr::find_u32(d, k);
        let value = |k| match attr::find(d, k).and_then(Data::parse) {
            Some(Data::Value(v)) => Some(v),
            _ => None,
        };
        Some(match name {
            "payload" => Expr::Payload(Payload {
                base: match u(2)? {
                    0 => PayloadBase::LinkLayer,
                    1 => PayloadBase::Network,
                    2 => PayloadBase::Transport,
                    _ => return None,
                },
                offset: u(3)?,
                len: u(4)?,
                dreg: reg(d, 1),
                sreg: reg(d, 5),
                csum: u(6).map(|t| (t, u(7).unwrap_or(0), u(8).unwrap_or(0))),
            }),
            "meta" => Expr::Meta(Meta {
                key: MetaKey::from_number(u(2)?),
                dreg: reg(d, 1),
                sreg: reg(d, 3),
            }),
            "ct" => Expr::Ct(Ct {
                key: CtKey::from_number(u(2)?),
                dreg: reg(d, 1),
                sreg: reg(d, 4),
                direction: attr::find(d, 3).and_then(|v| v.first().copied()),
            }),
            "cmp" => Expr::Cmp(Cmp {
                sreg: reg(d, 1)?,
                op: CmpOp::from_number(u(2)?)?,
                data: value(3)?,
            }),
            "bitwise" => Expr::Bitwise(Bitwise {
                sreg: reg(d, 1)?,
                dreg: reg(d, 2)?,
                len: u(3)?,
                mask: value(4)?,
                xor: value(5)?,
                op: u(6),
            }),
            "fib" => Expr::Fib(Fib {
                flags: u(3)?,
                result: u(2)?,
                dreg: reg(d, 1)?,
            }),
            "lookup" => Expr::Lookup(Lookup {
                set: attr::find_str(d, 1)?,
                set_id: u(4),
                sreg: reg(d, 2)?,
                dreg: reg(d, 3),
                invert: u(5).unwrap_or(0) & 1 != 0,
            }),
            "immediate" => Expr::Immediate(Immediate {
                dreg: reg(d, 1)?,
                data: attr::find(d, 2).and_then(Data::parse)?,
            }),
            "nat" => Expr::Nat(Nat {
                kind: if u(1)? == 0 {
                    NatType::Snat
                } else {
                    NatType::Dnat
                },
                family: u(2)?,
                addr_min: reg(d, 3),
                addr_max: reg(d, 4),
                proto_min: reg(d, 5),
                proto_max: reg(d, 6),
                flags: u(7).unwrap_or(0),
            }),
            "masq" => Expr::Masq(Masq {
                flags: u(1).unwrap_or(0),
                proto_min: reg(d, 2),
                proto_max: reg(d, 3),
            }),
            "redir" => Expr::Redir(Redir {
                proto_min: reg(d, 1),
                proto_max: reg(d, 2),
                flags: u(3).unwrap_or(0),
            }),
            "counter" => Expr::Counter {
                bytes: attr::find(d, 1).and_then(attr::u64_of).unwrap_or(0),
                packets: attr::find(d, 2).and_then(attr::u64_of).unwrap_or(0),
            },
            _ => return None,
        })
    }
}

/// Encodes a rule's expression list (the value of `NFTA_RULE_EXPRESSIONS`).
pub(crate) fn write_list(w: &mut Writer, kind: u16, exprs: &[Expr]) {
    w.nested(kind, |l| {
        for e in exprs {
            e.write(l);
        }
    });
}

/// Decodes the value of `NFTA_RULE_EXPRESSIONS`.
pub(crate) fn parse_list(list: &[u8]) -> Vec<Expr> {
    attr::iter(list)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .map(|(_, v)| Expr::parse(v))
        .collect()
}

impl std::fmt::Display for Expr {
    /// The `nft --debug=netlink` notation (for logs and error messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        let r = |r: Option<Reg>| r.map(|r| r.0.to_string()).unwrap_or_else(|| "-".into());
        match self {
            Expr::Payload(p) => {
                let base = match p.base {
                    PayloadBase::LinkLayer => "link",
                    PayloadBase::Network => "network",
                    PayloadBase::Transport => "transport",
                };
                match p.sreg {
                    Some(s) => write!(
                        f,
                        "[ payload write reg {} => {}b @ {base} header + {} ]",
                        s.0, p.len, p.offset
                    ),
                    None => write!(
                        f,
                        "[ payload load {}b @ {base} header + {} => reg {} ]",
                        p.len,
                        p.offset,
                        r(p.dreg)
                    ),
                }
            }
            Expr::Meta(m) => match m.sreg {
                Some(s) => write!(f, "[ meta set {:?} with reg {} ]", m.key, s.0),
                None => write!(f, "[ meta load {:?} => reg {} ]", m.key, r(m.dreg)),
            },
            Expr::Ct(c) => match c.sreg {
                Some(s) => write!(f, "[ ct set {:?} with reg {} ]", c.key, s.0),
                None => write!(f, "[ ct load {:?} => reg {} ]", c.key, r(c.dreg)),
            },
            Expr::Cmp(c) => write!(f, "[ cmp {:?} reg {} 0x{} ]", c.op, c.sreg.0, hex(&c.data)),
            Expr::Bitwise(b) => write!(
                f,
                "[ bitwise reg {} = ( reg {} & 0x{} ) ^ 0x{} ]",
                b.dreg.0,
                b.sreg.0,
                hex(&b.mask),
                hex(&b.xor)
            ),
            Expr::Fib(x) => {
                let what = |bit: u32, name| if x.flags & bit != 0 { name } else { "" };
                let result = match x.result {
                    fib::RESULT_OIF => "oif",
                    fib::RESULT_OIFNAME => "oifname",
                    fib::RESULT_ADDRTYPE => "type",
                    _ => "?",
                };
                write!(
                    f,
                    "[ fib {}{}{} {result} => reg {} ]",
                    what(fib::F_SADDR, "saddr"),
                    what(fib::F_DADDR, "daddr"),
                    what(fib::F_MARK, " . mark"),
                    x.dreg.0
                )
            }
            Expr::Lookup(l) => write!(
                f,
                "[ lookup reg {} set {} dreg {}{} ]",
                l.sreg.0,
                l.set,
                r(l.dreg),
                if l.invert { " invert" } else { "" }
            ),
            Expr::Immediate(i) => match &i.data {
                Data::Verdict(v) => write!(f, "[ immediate reg {} {v} ]", i.dreg.0),
                Data::Value(v) => write!(f, "[ immediate reg {} 0x{} ]", i.dreg.0, hex(v)),
            },
            Expr::Nat(n) => write!(
                f,
                "[ nat {:?} family {} addr {}-{} proto {}-{} flags 0x{:x} ]",
                n.kind,
                n.family,
                r(n.addr_min),
                r(n.addr_max),
                r(n.proto_min),
                r(n.proto_max),
                n.flags
            ),
            Expr::Masq(m) => write!(f, "[ masq flags 0x{:x} ]", m.flags),
            Expr::Redir(m) => write!(f, "[ redir flags 0x{:x} ]", m.flags),
            Expr::Counter { bytes, packets } => {
                write!(f, "[ counter pkts {packets} bytes {bytes} ]")
            }
            Expr::Other { name, data } => write!(f, "[ {name} 0x{} ]", hex(data)),
        }
    }
}
