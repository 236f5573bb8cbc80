package translate

import (
	"net"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestBootstrapAdmin(t *testing.T) {
	base := BootstrapOptions{NodeID: "edge-1", XDSAddress: "127.0.0.1:18000"}
	for _, tc := range []struct {
		name    string
		address string
		port    int
		want    string // ip:port, "" for no admin
		wantErr string
	}{
		{name: "loopback port", port: 9901, want: "127.0.0.1:9901"},
		{name: "off", want: ""},
		{name: "address wins over port", address: "0.0.0.0:9000", port: 9901, want: "0.0.0.0:9000"},
		{name: "ipv6", address: "[::1]:9901", want: "[::1]:9901"},
		{name: "host name", address: "localhost:9901", wantErr: "needs an IP address"},
		{name: "no port", address: "127.0.0.1", wantErr: "admin address"},
		{name: "port out of range", address: "127.0.0.1:70000", wantErr: "bad port"},
		{name: "negative port", port: -1, wantErr: "admin port -1"},
	} {
		o := base
		o.AdminAddress, o.AdminPort = tc.address, tc.port
		b, err := Bootstrap(o)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want one mentioning %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := ""
		if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
			got = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		}
		if got != tc.want {
			t.Errorf("%s: admin %q, want %q", tc.name, got, tc.want)
		}
		if err := Check(Resources{"bootstrap": {b}}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// The ADS connection: the requested protocol, the node sent once (the
// server keeps it per stream), the node kind in metadata, and an HTTP/2
// xds_cluster resolved by DNS only when the address is a name.
func TestBootstrapADS(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		delta  bool
		api    corev3.ApiConfigSource_ApiType
		static bool
	}{
		{"127.0.0.1:18000", false, corev3.ApiConfigSource_GRPC, true},
		{"modelsplit.svc:18000", true, corev3.ApiConfigSource_DELTA_GRPC, false},
	} {
		b, err := Bootstrap(BootstrapOptions{NodeID: "edge-1", NodeCluster: "gw", XDSAddress: tc.addr, Delta: tc.delta})
		if err != nil {
			t.Fatal(err)
		}
		ads := b.GetDynamicResources().GetAdsConfig()
		if ads.GetApiType() != tc.api || !ads.GetSetNodeOnFirstMessageOnly() {
			t.Errorf("%s: api %v set_node_on_first_message_only %v", tc.addr, ads.GetApiType(), ads.GetSetNodeOnFirstMessageOnly())
		}
		if b.GetDynamicResources().GetCdsConfig().GetAds() == nil || b.GetDynamicResources().GetLdsConfig().GetAds() == nil {
			t.Errorf("%s: CDS/LDS not over ADS", tc.addr)
		}
		if k := b.GetNode().GetMetadata().GetFields()[NodeKindMetadataKey].GetStringValue(); k != string(KindEnvoy) {
			t.Errorf("%s: node metadata %s=%q", tc.addr, NodeKindMetadataKey, k)
		}
		c := b.GetStaticResources().GetClusters()[0]
		if c.GetName() != xdsClusterName || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != xdsClusterName {
			t.Errorf("%s: ADS does not use the %s cluster", tc.addr, xdsClusterName)
		}
		if _, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; !ok {
			t.Errorf("%s: xds_cluster without HTTP/2 (gRPC needs it)", tc.addr)
		}
		if isStatic := c.GetType().String() == "STATIC"; isStatic != tc.static {
			t.Errorf("%s: cluster type %v", tc.addr, c.GetType())
		}
		if b.GetAdmin() != nil {
			t.Errorf("%s: admin set though neither AdminAddress nor AdminPort was", tc.addr)
		}
	}
	if _, err := Bootstrap(BootstrapOptions{XDSAddress: "127.0.0.1:18000"}); err == nil || !strings.Contains(err.Error(), "node id") {
		t.Errorf("missing node id: err %v", err)
	}
}
