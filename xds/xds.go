package xds

import (
	"github.com/modelsplit/modelsplit/xds/server"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// The names below keep the callers of the package as it was before the
// split (service/, cli/, test/) compiling unchanged; new code imports
// xds/translate or xds/server directly.

type (
	NodeKind         = translate.NodeKind
	Resources        = translate.Resources
	CheckError       = translate.CheckError
	BootstrapOptions = translate.BootstrapOptions
	BootstrapTLS     = translate.BootstrapTLS
	Server           = server.Server
	ServerOptions    = server.ServerOptions
	NodeACK          = server.NodeACK
	Oversized        = translate.Oversized
)

const (
	KindEnvoy              = translate.KindEnvoy
	KindGRPC               = translate.KindGRPC
	GatewayListenerName    = translate.GatewayListenerName
	GatewayRouteName       = translate.GatewayRouteName
	ExtProcClusterName     = translate.ExtProcClusterName
	AccessLogName          = translate.AccessLogName
	AccessLogFlushInterval = translate.AccessLogFlushInterval
	AccessLogBufferBytes   = translate.AccessLogBufferBytes
	DefaultDebounce        = server.DefaultDebounce
	// GRPCDefaultReceiveLimit is grpc-go's default largest message.
	GRPCDefaultReceiveLimit = translate.GRPCDefaultReceiveLimit
)

var (
	Kinds                   = translate.Kinds
	Build                   = translate.Build
	Check                   = translate.Check
	RenderYAML              = translate.RenderYAML
	Bootstrap               = translate.Bootstrap
	RenderBootstrapYAML     = translate.RenderBootstrapYAML
	DefaultBootstrapOptions = translate.DefaultBootstrapOptions
	NewServer               = server.NewServer
	OversizedResources      = translate.OversizedResources
)
