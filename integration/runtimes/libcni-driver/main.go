// rcni-libcni: a small cnitool built on Debian's libcni (golang-github-appc-cni-dev, v1.1.x).
//
// It drives a network config (a .conflist, or a single-plugin .conf that libcni wraps into a
// list) through libcni exactly as a runtime does: result caching in -cache, prevResult chaining,
// result version conversion, CHECK from the cached result, DEL from the cached config.
//
// libcni v1.1.x predates CNI 1.1.0, so STATUS and GC are done here the way libcni v1.2 does
// them: each plugin of the list gets the list's name and cniVersion injected (GC also gets
// "cni.dev/valid-attachments") and is executed through libcni's invoke package.
//
// Usage: rcni-libcni [flags] add|check|del|cached|validate|status|gc|version
// Output: JSON on stdout; failures: message on stderr, exit 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
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
	if flag.NArg() != 1 {
		fail("usage: rcni-libcni [flags] add|check|del|cached|validate|status|gc|version")
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
			atts := []map[string]string{}
			if *valid != "" {
				for _, a := range strings.Split(*valid, ",") {
					p := strings.SplitN(a, "/", 2)
					if len(p) != 2 {
						fail("bad -valid entry %q", a)
					}
					atts = append(atts, map[string]string{"containerID": p[0], "ifname": p[1]})
				}
			}
			extra["cni.dev/valid-attachments"] = atts
		}
		for _, p := range list.Plugins {
			pluginPath, err := invoke.FindInPath(p.Network.Type, paths)
			if err != nil {
				fail("%s: %v", strings.ToUpper(cmd), err)
			}
			args := &invoke.Args{Command: strings.ToUpper(cmd), Path: *binPath}
			if err := invoke.ExecPluginWithoutResult(ctx, pluginPath, pluginConf(list, p, extra), args, nil); err != nil {
				fail("%s %s: %v", strings.ToUpper(cmd), p.Network.Type, err)
			}
		}
		printJSON(map[string]string{cmd: "ok"})
	default:
		fail("unknown command %q", cmd)
	}
}
