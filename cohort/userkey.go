package cohort

import (
	crand "crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// userKey extracts the sticky key from the header or the cookie.
func (ep *endpoint) userKey(h Headers) (string, bool) {
	if ep.header != "" {
		v, ok := h.Get(ep.header)
		return v, ok && v != ""
	}
	if ep.cookie != "" {
		if raw, ok := h.Get("cookie"); ok {
			return cookieValue(raw, ep.cookie)
		}
	}
	return "", false
}

// cookieValue finds name=value in a Cookie header without allocating: the
// value is a substring of the header.
func cookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			v = strings.TrimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// cookieFor is the Set-Cookie value that hands a minted id to the client.
func (ep *endpoint) cookieFor(id string) string {
	var b strings.Builder
	b.Grow(len(ep.cookie) + len(id) + 64)
	b.WriteString(ep.cookie)
	b.WriteByte('=')
	b.WriteString(id)
	b.WriteString("; Path=/; HttpOnly; SameSite=Lax")
	if ep.ttl > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(int64((ep.ttl+time.Second-1)/time.Second), 10))
	}
	return b.String()
}

// mintID is a 128-bit random id: unguessable, so a user cannot pick their
// cohort by choosing an id.
func mintID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails on supported platforms (Go 1.24+ crashes instead)
	return hex.EncodeToString(b[:])
}
