package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// gatewayEdge checks the gateway's edge settings: each problem would
// otherwise become a listener Envoy rejects, or a limit Envoy silently
// clamps or ignores.
func (v *validator) gatewayEdge() {
	g := v.c.Gateway
	v.accessLog(g.AccessLog)
	if g.XFFNumTrustedHops < 0 || g.XFFNumTrustedHops > MaxXFFNumTrustedHops {
		v.add("gateway.xff_num_trusted_hops", "must be 0-%d (the proxies in front of Envoy that append to x-forwarded-for; 0 when clients connect to Envoy directly), got %d",
			MaxXFFNumTrustedHops, g.XFFNumTrustedHops)
	}
	if t := g.RequestHeadersTimeout; t < Duration(time.Millisecond) || t > maxRequestHeadersTimeout {
		v.add(fieldRequestHeadersTimeout, "must be between 1ms and %v, got %v (a client that has not sent its headers by then is answered 408)", maxRequestHeadersTimeout, t)
	}
	l := g.Limits
	v.intRange(fieldConnectionBuffer, l.ConnectionBufferBytes, minConnectionBufferBytes, maxConnectionBufferBytes)
	v.intRange(fieldMaxRequestHeadersKB, l.MaxRequestHeadersKB, 1, maxRequestHeadersKB)
	v.intRange(fieldMaxConcurrentStreams, l.HTTP2MaxConcurrentStreams, 1, maxHTTP2Value)
	v.intRange(fieldStreamWindow, l.HTTP2InitialStreamWindowBytes, minHTTP2WindowBytes, maxHTTP2Value)
	v.intRange(fieldConnectionWindow, l.HTTP2InitialConnectionWindowBytes, minHTTP2WindowBytes, maxHTTP2Value)
	v.gatewayTLS(g.TLS)
}

func (v *validator) intRange(field string, n, min, max int) {
	if n < min || n > max {
		v.add(field, "must be %d-%d, got %d", min, max, n)
	}
}

// accessLog: Envoy opens the file itself when it loads the listener and
// rejects the listener when it cannot, so the path is checked here on the
// same assumption as gateway.tls (Envoy sees the same file system).
func (v *validator) accessLog(path string) {
	const f = "gateway.access_log"
	switch {
	case path == "" || path == AccessLogStdout || path == AccessLogStderr:
		return
	case !filepath.IsAbs(path):
		v.add(f, "%q: want stdout, stderr or an absolute file path (Envoy opens it, from its own working directory)", path)
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		v.add(f, "%q is a directory; name a file in it", path)
		return
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		v.add(f, "directory of %q: %v", path, err)
	} else if !fi.IsDir() {
		v.add(f, "%q: %s is not a directory", path, dir)
	}
}

// gatewayTLS: the files must be readable and hold what Envoy needs (a
// certificate chain, its private key, CA certificates); a file Envoy cannot
// load gets the whole listener rejected.
func (v *validator) gatewayTLS(t GatewayTLS) {
	const f = "gateway.tls"
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(f, "cert_file and key_file must be set together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		v.add(f+".client_ca_file", "client certificates need TLS on the listener: set cert_file and key_file")
	}
	certPEM := v.readTLSFile(f+".cert_file", t.CertFile)
	keyPEM := v.readTLSFile(f+".key_file", t.KeyFile)
	caPEM := v.readTLSFile(f+".client_ca_file", t.ClientCAFile)
	certOK := false
	if certPEM != nil {
		if err := parseCertificates(certPEM); err != nil {
			v.add(f+".cert_file", "%q: %v", t.CertFile, err)
		} else {
			certOK = true
		}
	}
	if certOK && keyPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			v.add(f+".key_file", "%q is not the private key of the certificate in cert_file: %v", t.KeyFile, err)
		}
	}
	if caPEM != nil {
		if err := parseCertificates(caPEM); err != nil {
			v.add(f+".client_ca_file", "%q: %v", t.ClientCAFile, err)
		}
	}
}

// readTLSFile returns the file's contents, or nil after reporting why it
// cannot be used.
func (v *validator) readTLSFile(field, path string) []byte {
	if path == "" {
		return nil
	}
	if !filepath.IsAbs(path) {
		v.add(field, "%q must be an absolute path (Envoy reads it, from its own working directory)", path)
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.add(field, "cannot read %q: %v", path, err)
		return nil
	}
	return b
}

// parseCertificates checks that PEM data holds at least one certificate
// and that every CERTIFICATE block parses.
func parseCertificates(data []byte) error {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no PEM certificate in it")
	}
	return nil
}

// statNames refuses names that differ but would share Envoy stat names
// (StatName turns dots into underscores): endpoints across the config,
// variants and shadows within an endpoint. Exact duplicates are reported
// by endpoints() already.
func (v *validator) statNames() {
	endpoints := map[string]int{}
	for i := range v.c.Endpoints {
		e := &v.c.Endpoints[i]
		if e.Name != "" {
			sn := StatName(e.Name)
			if j, seen := endpoints[sn]; seen && v.c.Endpoints[j].Name != e.Name {
				v.add(fmt.Sprintf("endpoints[%d].name", i), "%q and endpoints[%d] %q would share Envoy's stat names (%q: dots become underscores); rename one",
					e.Name, j, v.c.Endpoints[j].Name, sn)
			} else if !seen {
				endpoints[sn] = i
			}
		}
		members := map[string]string{} // stat name → name
		check := func(field, name string) {
			if name == "" {
				return
			}
			sn := StatName(name)
			if prev, seen := members[sn]; seen && prev != name {
				v.add(field, "%q and %q would share Envoy's stat names (%q: dots become underscores); rename one", name, prev, sn)
			} else if !seen {
				members[sn] = name
			}
		}
		for j := range e.Variants {
			check(fmt.Sprintf("endpoints[%d].variants[%d].name", i, j), e.Variants[j].Name)
		}
		for j := range e.Shadows {
			check(fmt.Sprintf("endpoints[%d].shadows[%d].name", i, j), e.Shadows[j].Name)
		}
	}
}

// pathPrefixes refuses path_prefix spellings no request can match once
// Envoy has normalised its path (normalize_path, merge_slashes, escaped
// slashes unescaped and redirected) or that Envoy's route matcher rejects.
func (v *validator) pathPrefixes() {
	for i := range v.c.Endpoints {
		p := v.c.Endpoints[i].Match.PathPrefix
		if !strings.HasPrefix(p, "/") {
			continue // reported by endpoint()
		}
		f := fmt.Sprintf("endpoints[%d].match.path_prefix", i)
		lower := strings.ToLower(p)
		switch {
		case strings.ContainsAny(p, "?#"):
			v.add(f, "%q: a path prefix cannot hold a query or fragment ('?', '#')", p)
		case strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
			v.add(f, "%q holds white space or control characters; no request path can", p)
		case strings.Contains(p, "//"):
			v.add(f, "%q: Envoy merges repeated slashes in request paths before matching, so this prefix would never match; write %q",
				p, mergeSlashes(p))
		case strings.Contains(p, `\`) || strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c"):
			v.add(f, "%q: Envoy turns backslashes and escaped slashes in request paths into '/' before matching; write the prefix with '/'", p)
		case hasDotSegment(p):
			v.add(f, "%q: Envoy resolves '.' and '..' segments in request paths before matching, so this prefix would never match", p)
		}
	}
}

func mergeSlashes(p string) string {
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	return p
}

func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
