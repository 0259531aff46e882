package harness

// images.go packs container images without Docker or a registry, with
// go-containerregistry: one layer made from a list of files, a config with
// entrypoint and user, written as a docker-archive tarball that
// `ctr images import` reads. Every timestamp is fixed and the layer tar
// is written in sorted order, so the same inputs give the same digests.
// Adding an image (the moat agent's, later) is one Image value.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sync/errgroup"
)

// epoch is the timestamp of every file and of the image config.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one entry of an image's layer. Exactly one of Src (a host file
// to copy), Data (contents), Link (symlink target) or Dir is set.
type File struct {
	Path string // absolute path in the image
	Src  string
	Data []byte
	Link string
	Dir  bool
	Mode os.FileMode // default 0755 for Src and Dir, 0644 for Data
}

// Image describes one image to build.
type Image struct {
	Ref        string // e.g. registry.k8s.io/pause:3.10.2
	Files      []File
	Entrypoint []string
	Cmd        []string
	User       string
	Env        []string
	WorkingDir string
}

// Binaries makes one executable File per host binary, placed in dir.
func Binaries(dir string, srcs ...string) []File {
	var fs []File
	for _, s := range srcs {
		fs = append(fs, File{Path: path.Join(dir, filepath.Base(s)), Src: s, Mode: 0o755})
	}
	return fs
}

// Build writes img as a docker-archive tarball to out.
func (img Image) Build(out string) error {
	ref, err := name.ParseReference(img.Ref, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("image %q: parse reference: %w", img.Ref, err)
	}
	layerTar, err := img.layer()
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	// Fast gzip: the tarball only travels to a local containerd; the
	// default level triples the time of an Up.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return fmt.Errorf("image %s: layer: %w", img.Ref, err)
	}
	im, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("image %s: append layer: %w", img.Ref, err)
	}
	cf, err := im.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: epoch}
	env := img.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cf.Config = v1.Config{Entrypoint: img.Entrypoint, Cmd: img.Cmd, User: img.User, Env: env,
		WorkingDir: img.WorkingDir}
	cf.History = []v1.History{{Created: v1.Time{Time: epoch}, CreatedBy: "moat-cluster images.go"}}
	im, err = mutate.ConfigFile(im, cf)
	if err != nil {
		return fmt.Errorf("image %s: config: %w", img.Ref, err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	if err := tarball.WriteToFile(tmp, ref, im); err != nil {
		return fmt.Errorf("write image %s: %w", img.Ref, err)
	}
	return os.Rename(tmp, out)
}

// layer is the uncompressed tar of the image's files, parents first and
// every path in sorted order.
func (img Image) layer() ([]byte, error) {
	entries := map[string]File{}
	for _, f := range img.Files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, fmt.Errorf("file %q: not a path in the image", f.Path)
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("file %s: listed twice", p)
		}
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Format: tar.FormatPAX, Mode: int64(f.Mode)}
		var data []byte
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		case f.Src != "":
			b, err := os.ReadFile(f.Src)
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", p, err)
			}
			data = b
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		default:
			data = f.Data
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if h.Typeflag == 0 {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BusyboxPath is Debian busybox-static's binary.
const BusyboxPath = "/bin/busybox"

// BusyboxUserland is a small shell userland: busybox with a link per
// applet, /etc/passwd and /etc/group with root and nobody, and /tmp.
func BusyboxUserland(busybox string) ([]File, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets of %s (apt-get install busybox-static): %w", busybox, err)
	}
	fs := []File{
		{Path: "/bin/busybox", Src: busybox, Mode: 0o755},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnobody:x:65534:\n")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
	for _, a := range strings.Fields(string(out)) {
		p := "/" + a
		if p == "/bin/busybox" {
			continue
		}
		fs = append(fs, File{Path: p, Link: "/bin/busybox"})
	}
	return fs, nil
}

// Image references of the built-in images. agnhost has the upstream e2e
// framework's tag, so e2e code that names it finds it on the nodes.
const (
	BusyboxImage = "localhost/moat/busybox:1.35"
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	CoreDNSImage = "localhost/moat/coredns:v1.15.0"
)

// builtinImages are pause, busybox, agnhost and coredns from binDir.
func builtinImages(binDir string) ([]Image, error) {
	bb, err := BusyboxUserland(BusyboxPath)
	if err != nil {
		return nil, err
	}
	agn := append(append([]File{}, bb...),
		File{Path: "/agnhost", Src: filepath.Join(binDir, "agnhost"), Mode: 0o755},
		File{Path: "/agnhost-2", Link: "agnhost"})
	return []Image{
		{Ref: PauseImage, Files: Binaries("/", filepath.Join(binDir, "pause")), Entrypoint: []string{"/pause"}, User: "65535:65535"},
		{Ref: BusyboxImage, Files: bb, Cmd: []string{"sh"}},
		{Ref: AgnhostImage, Files: agn, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}},
		{Ref: CoreDNSImage, Files: Binaries("/", filepath.Join(binDir, "coredns")), Entrypoint: []string{"/coredns"}},
	}, nil
}

// Key identifies what Build would write: the image description and, for
// every copied file, its path, size and modification time.
func (img Image) Key() (string, error) {
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(img); err != nil {
		return "", err
	}
	for _, f := range img.Files {
		if f.Src == "" {
			continue
		}
		st, err := os.Stat(f.Src)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", img.Ref, err)
		}
		fmt.Fprintf(h, "%s %d %d\n", f.Src, st.Size(), st.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// buildImages returns the tarballs of the built-in images, then the extra
// ones. Built images are kept in ImageCache by Key, so an Up after the
// first one only imports them.
func (c Config) buildImages() ([]string, error) {
	if err := os.MkdirAll(c.ImageCache, 0o755); err != nil {
		return nil, fmt.Errorf("create image cache: %w", err)
	}
	imgs, err := builtinImages(c.BinDir)
	if err != nil {
		return nil, err
	}
	tars := make([]string, len(imgs))
	var g errgroup.Group
	for i, img := range imgs {
		key, err := img.Key()
		if err != nil {
			return nil, err
		}
		base := strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)
		tars[i] = filepath.Join(c.ImageCache, base+"-"+key+".tar")
		if exists(tars[i]) {
			continue
		}
		g.Go(func() error { return img.Build(tars[i]) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return append(tars, c.ExtraImages...), nil
}
