// rcni-libcni: a small cnitool built on Debian's libcni (golang-github-appc-cni-dev, v1.1.x).
//
// It drives a network config (a .conflist, or a single-plugin .conf that libcni wraps into a
// list) through libcni exactly as a runtime does: result caching, prevResult chaining,
// result version conversion, CHECK from the cached result, DEL from the cached config.
//
// Two command lines:
//
//   - cnitool's: `rcni-libcni add|check|del|gc|status NETWORK NETNS`, the network loaded by name
//     from NETCONFPATH (default /etc/cni/net.d), plugins from CNI_PATH, CAP_ARGS (JSON
//     capability args), CNI_ARGS, CNI_IFNAME (default eth0); the container ID is CNI_CONTAINERID
//     or, as cnitool makes it, "cnitool-" + the first 10 bytes of sha512(netns path) in hex.
//     Beyond cnitool: CNI_CACHE_DIR (libcni's cache, default /var/lib/cni). `add` prints the
//     result, failures print the error and exit 1, as cnitool.
//   - the runtime suite's: `rcni-libcni [flags] add|check|del|cached|validate|status|gc|version`
//     with -conf FILE and the rest as flags; output JSON on stdout.
//
// libcni v1.1.x predates CNI 1.1.0, so STATUS and GC are done here the way libcni v1.2 does
// them: each plugin of the list gets the list's name and cniVersion injected (GC also gets
// "cni.dev/valid-attachments") and is executed through libcni's invoke package. cnitool's `gc`
// passes no valid attachments, so, as libcni v1.2's GCNetworkList, it DELs every cached
// attachment of the network, then (cniVersion 1.1.0+) runs the plugins' GC; STATUS is skipped
// below 1.1.0.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func loadList(path string) *libcni.NetworkConfigList {
	if strings.HasSuffix(path, ".conflist") {
		l, err := libcni.ConfListFromFile(path)
		if err != nil {
			fail("load %s: %v", path, err)
		}
		return l
	}
	c, err := libcni.ConfFromFile(path)
	if err != nil {
		fail("load %s: %v", path, err)
	}
	l, err := libcni.ConfListFromConf(c)
	if err != nil {
		fail("wrap %s: %v", path, err)
	}
	return l
}

func printJSON(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("marshal: %v", err)
	}
	fmt.Println(string(b))
}

// resultJSON renders a libcni result as JSON, optionally converted to another version.
func resultJSON(r types.Result, to string) json.RawMessage {
	if to != "" {
		conv, err := r.GetAsVersion(to)
		if err != nil {
			fail("convert result %s -> %s: %v", r.Version(), to, err)
		}
		r = conv
	}
	b, err := json.Marshal(r)
	if err != nil {
		fail("marshal result: %v", err)
	}
	return b
}

// pluginConf injects name/cniVersion (and extra keys) into one plugin's config, as libcni does.
func pluginConf(list *libcni.NetworkConfigList, p *libcni.NetworkConfig, extra map[string]interface{}) []byte {
	inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
	for k, v := range extra {
		inject[k] = v
	}
	c, err := libcni.InjectConf(p, inject)
	if err != nil {
		fail("inject: %v", err)
	}
	return c.Bytes
}

func main() {
	binPath := flag.String("path", "", "CNI_PATH (':'-separated plugin dirs)")
	cacheDir := flag.String("cache", "", "libcni cache dir")
	confFile := flag.String("conf", "", "network config file (.conflist or .conf)")
	netns := flag.String("netns", "", "CNI_NETNS")
	id := flag.String("id", "", "CNI_CONTAINERID")
	ifname := flag.String("ifname", "eth0", "CNI_IFNAME")
	cniArgs := flag.String("args", "", "CNI_ARGS as K=V;K=V")
	convert := flag.String("convert", "", "also render the ADD/cached result in this version")
	valid := flag.String("valid", "", "GC: valid attachments as id/ifname,id/ifname")
	plugin := flag.String("plugin", "", "version: plugin type to ask")
	portMappings := flag.String("portmap", "", "capability portMappings, as JSON (kubelet's hostPorts)")
	flag.Parse()
	if flag.NArg() == 3 && cnitoolCommands[flag.Arg(0)] {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["ifname"] {
			*ifname = ""
		}
		if !set["path"] {
			*binPath = os.Getenv("CNI_PATH")
		}
		cnitool(flag.Arg(0), flag.Arg(1), flag.Arg(2), *binPath, *cacheDir, *ifname, *valid)
		return
	}
	if flag.NArg() != 1 {
		fail("usage: rcni-libcni add|check|del|gc|status NETWORK NETNS (cnitool's)\n" +
			"       rcni-libcni [flags] add|check|del|cached|validate|status|gc|version")
	}
	cmd := flag.Arg(0)
	paths := strings.Split(*binPath, ":")
	cni := libcni.NewCNIConfigWithCacheDir(paths, *cacheDir, nil)
	ctx := context.Background()

	if cmd == "version" {
		info, err := cni.GetVersionInfo(ctx, *plugin)
		if err != nil {
			fail("VERSION %s: %v", *plugin, err)
		}
		printJSON(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
		return
	}

	list := loadList(*confFile)
	rt := &libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname}
	if *portMappings != "" {
		var pm []map[string]interface{}
		if err := json.Unmarshal([]byte(*portMappings), &pm); err != nil {
			fail("bad -portmap: %v", err)
		}
		rt.CapabilityArgs = map[string]interface{}{"portMappings": pm}
	}
	if *cniArgs != "" {
		for _, kv := range strings.Split(*cniArgs, ";") {
			parts := strings.SplitN(kv, "=", 2)
			if len(parts) != 2 {
				fail("bad -args pair %q", kv)
			}
			rt.Args = append(rt.Args, [2]string{parts[0], parts[1]})
		}
	}

	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("ADD: %v", err)
		}
		out := map[string]interface{}{"version": res.Version(), "result": resultJSON(res, "")}
		if *convert != "" {
			out["converted"] = resultJSON(res, *convert)
		}
		printJSON(out)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CHECK: %v", err)
		}
		printJSON(map[string]string{"check": "ok"})
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("DEL: %v", err)
		}
		printJSON(map[string]string{"del": "ok"})
	case "cached":
		res, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail("cached result: %v", err)
		}
		if res == nil {
			printJSON(map[string]interface{}{"result": nil})
			return
		}
		out := map[string]interface{}{"version": res.Version(), "result": resultJSON(res, "")}
		if *convert != "" {
			out["converted"] = resultJSON(res, *convert)
		}
		printJSON(out)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail("validate: %v", err)
		}
		printJSON(map[string]interface{}{"capabilities": caps})
	case "status", "gc":
		extra := map[string]interface{}{}
		if cmd == "gc" {
			atts := parseValid(*valid)
			if atts == nil {
				atts = []map[string]string{}
			}
			extra["cni.dev/valid-attachments"] = atts
		}
		if err := eachPlugin(ctx, list, paths, strings.ToUpper(cmd), extra); err != nil {
			fail("%v", err)
		}
		printJSON(map[string]string{cmd: "ok"})
	default:
		fail("unknown command %q", cmd)
	}
}

// eachPlugin runs STATUS or GC on every plugin of the list (libcni v1.2 GetStatusNetworkList /
// GCNetworkList's second half): name and cniVersion injected, plus `extra`.
func eachPlugin(ctx context.Context, list *libcni.NetworkConfigList, paths []string, cmd string, extra map[string]interface{}) error {
	for _, p := range list.Plugins {
		pluginPath, err := invoke.FindInPath(p.Network.Type, paths)
		if err != nil {
			return fmt.Errorf("%s: %v", cmd, err)
		}
		args := &invoke.Args{Command: cmd, Path: strings.Join(paths, string(os.PathListSeparator))}
		if err := invoke.ExecPluginWithoutResult(ctx, pluginPath, pluginConf(list, p, extra), args, nil); err != nil {
			return fmt.Errorf("%s %s: %v", cmd, p.Network.Type, err)
		}
	}
	return nil
}

// parseValid reads -valid (id/ifname,id/ifname); nil when not given.
func parseValid(valid string) []map[string]string {
	if valid == "" {
		return nil
	}
	atts := []map[string]string{}
	for _, a := range strings.Split(valid, ",") {
		p := strings.SplitN(a, "/", 2)
		if len(p) != 2 {
			fail("bad -valid entry %q", a)
		}
		atts = append(atts, map[string]string{"containerID": p[0], "ifname": p[1]})
	}
	return atts
}

var cnitoolCommands = map[string]bool{"add": true, "check": true, "del": true, "gc": true, "status": true}

// exit ends as cnitool does: the error on stderr and status 1, else 0.
func exit(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// cnitool runs `cmd NETWORK NETNS` with cnitool's environment (see the file comment).
func cnitool(cmd, name, netns, binPath, cacheDir, ifname, valid string) {
	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = "/etc/cni/net.d"
	}
	list, err := libcni.LoadConfList(netdir, name)
	if err != nil {
		exit(err)
	}
	var capArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capArgs); err != nil {
			exit(err)
		}
	}
	var cniArgs [][2]string
	if v := os.Getenv("CNI_ARGS"); v != "" {
		for _, pair := range strings.Split(v, ";") {
			kv := strings.Split(pair, "=")
			if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
				exit(fmt.Errorf("invalid CNI_ARGS pair %q", pair))
			}
			cniArgs = append(cniArgs, [2]string{kv[0], kv[1]})
		}
	}
	if ifname == "" {
		ifname = os.Getenv("CNI_IFNAME")
	}
	if ifname == "" {
		ifname = "eth0"
	}
	netns, err = filepath.Abs(netns)
	if err != nil {
		exit(err)
	}
	id := os.Getenv("CNI_CONTAINERID")
	if id == "" {
		sum := sha512.Sum512([]byte(netns))
		id = fmt.Sprintf("cnitool-%x", sum[:10])
	}
	if cacheDir == "" {
		cacheDir = os.Getenv("CNI_CACHE_DIR")
	}
	paths := filepath.SplitList(binPath)
	cninet := libcni.NewCNIConfigWithCacheDir(paths, cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname, Args: cniArgs, CapabilityArgs: capArgs}
	ctx := context.Background()
	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, list, rt)
		if result != nil {
			_ = result.Print()
		}
		exit(err)
	case "check":
		exit(cninet.CheckNetworkList(ctx, list, rt))
	case "del":
		exit(cninet.DelNetworkList(ctx, list, rt))
	case "status":
		if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); !ok {
			exit(nil)
		}
		exit(eachPlugin(ctx, list, paths, "STATUS", nil))
	case "gc":
		if cacheDir == "" {
			cacheDir = libcni.CacheDir
		}
		exit(gc(ctx, cninet, list, paths, cacheDir, parseValid(valid)))
	}
}

// gc is libcni v1.2's GCNetworkList: DEL every cached attachment of the network that is not
// valid, then (1.1.0+) the plugins' GC with the valid attachments (none given: no key).
func gc(ctx context.Context, cninet *libcni.CNIConfig, list *libcni.NetworkConfigList, paths []string, cacheDir string, valid []map[string]string) error {
	isValid := map[[2]string]bool{}
	for _, a := range valid {
		isValid[[2]string{a["containerID"], a["ifname"]}] = true
	}
	var errs []error
	files, _ := filepath.Glob(filepath.Join(cacheDir, "results", "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var c struct {
			ContainerID string      `json:"containerId"`
			IfName      string      `json:"ifName"`
			NetworkName string      `json:"networkName"`
			NetNS       string      `json:"netns"`
			CniArgs     [][2]string `json:"cniArgs"`
		}
		if json.Unmarshal(data, &c) != nil || c.NetworkName != list.Name {
			continue
		}
		if isValid[[2]string{c.ContainerID, c.IfName}] {
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: c.ContainerID, IfName: c.IfName, NetNS: c.NetNS, Args: c.CniArgs}
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete stale attachment %s %s: %w", c.ContainerID, c.IfName, err))
		}
	}
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); ok {
		extra := map[string]interface{}{}
		if valid != nil {
			extra["cni.dev/valid-attachments"] = valid
		}
		if err := eachPlugin(ctx, list, paths, "GC", extra); err != nil {
			errs = append(errs, err)
		}
	}
	// errors.Join is Go 1.20; Debian 12 has 1.19.
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n"))
}
