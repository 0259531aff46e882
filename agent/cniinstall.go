package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// cniinstall.go installs moat-cni on the node (Config.CNIBinDir/CNIConfDir):
// the plugin binary at start, and the conflist once the agent can serve
// ADD (its caches are synced and its first plan enforced), both written to
// a temporary file and renamed into place, so that the runtime never sees
// a half-written file. On a clean stop the conflist stays (fail closed:
// without the agent, ADD fails and the runtime retries, so no pod starts
// unpoliced) unless CNIRemoveConfOnExit is set.

// CNIPluginName is the plugin's type and binary name.
const CNIPluginName = "moat-cni"

// CNIConflist returns the conflist the agent installs: moat-cni alone,
// talking to the agent's socket under runDir.
func CNIConflist(runDir string) ([]byte, error) {
	doc := map[string]any{
		"cniVersion": "1.1.0",
		"name":       "moat",
		"plugins": []any{map[string]any{
			"type":   CNIPluginName,
			"socket": filepath.Join(runDir, APISocket),
		}},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// pluginSource is the moat-cni binary to install: CNIPluginBinary, else
// moat-cni beside the agent's executable.
func (a *Agent) pluginSource() (string, error) {
	if a.cfg.CNIPluginBinary != "" {
		return a.cfg.CNIPluginBinary, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find moat-cni: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), CNIPluginName), nil
}

// installCNIBinary copies the plugin into CNIBinDir atomically.
func (a *Agent) installCNIBinary() error {
	src, err := a.pluginSource()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install moat-cni: read %s (set cniPluginBinary): %w", src, err)
	}
	dst := filepath.Join(a.cfg.CNIBinDir, CNIPluginName)
	if err := writeFileAtomic(dst, data, 0o755); err != nil {
		return fmt.Errorf("install moat-cni to %s: %w", dst, err)
	}
	return nil
}

// runCNIInstall writes the conflist once the agent can serve ADD, then
// waits for the end (and removes it if configured).
func (a *Agent) runCNIInstall(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if ok, _ := a.cni.ready(); ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	conf, err := CNIConflist(a.cfg.RunDir)
	if err != nil {
		return err
	}
	path := filepath.Join(a.cfg.CNIConfDir, a.cfg.CNIConfName)
	if err := writeFileAtomic(path, conf, 0o644); err != nil {
		return fmt.Errorf("install conflist %s: %w", path, err)
	}
	a.log.Info("moat-cni installed", "conflist", path, "bin", filepath.Join(a.cfg.CNIBinDir, CNIPluginName))
	<-ctx.Done()
	if a.cfg.CNIRemoveConfOnExit {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove conflist %s: %w", path, err)
		}
		a.log.Info("moat-cni conflist removed", "conflist", path)
	}
	return nil
}
