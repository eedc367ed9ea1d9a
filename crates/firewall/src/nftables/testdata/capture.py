#!/usr/bin/env python3
"""Regenerates the fixtures next to this script: what `nft` itself sends for a script.

Usage (root, in a scratch netns):  ip netns add x; ./capture.py x script.nft
Runs `nft -f script.nft` under `strace -e write=3` and prints every nf_tables message of
the batch as `<TYPE> flags=0x.... family=N attrs=<hex>`; the fixtures are the script as
`# ` comments followed by that output. nft 1.0.6 (Debian 12) made the committed ones.
"""
import subprocess, sys, re, struct
ns, f = sys.argv[1], sys.argv[2]
out = subprocess.run(["ip","netns","exec",ns,"strace","-e","trace=sendmsg","-e","write=3","-o","/dev/stdout","nft","-f",f],capture_output=True,text=True).stdout
bufs=[]; cur=None
for line in out.splitlines():
    if line.startswith("sendmsg"):
        cur=bytearray(); bufs.append(cur); continue
    m=re.match(r' \| [0-9a-f]{5}  ((?:[0-9a-f]{2}  ?){1,16})',line)
    if m and cur is not None:
        cur.extend(bytes.fromhex(m.group(1).replace(" ","")))
names={0:"NEWTABLE",2:"DELTABLE",3:"NEWCHAIN",5:"DELCHAIN",6:"NEWRULE",8:"DELRULE",9:"NEWSET",11:"DELSET",12:"NEWSETELEM",14:"DELSETELEM",16:"GETGEN"}
for b in bufs:
    off=0
    while off+16<=len(b):
        ln,typ,flags,seq,pid=struct.unpack_from("=IHHII",b,off)
        fam=b[off+16]
        body=bytes(b[off+20:off+ln])
        if typ>>8==10:
            print(f"{names.get(typ&0xff,typ&0xff)} flags=0x{flags:04x} family={fam} attrs={body.hex()}")
        off+=(ln+3)&~3
