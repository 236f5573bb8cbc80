// Package accesslog receives the gateway's gRPC access log
// (envoy.access_loggers.http_grpc, StreamAccessLogs) and turns each
// request's entry into its variant's generative-model telemetry:
//
//   - modelsplit_variant_time_to_first_byte_seconds: request start → the
//     variant's first response byte (time_to_first_upstream_rx_byte; for
//     a token stream, the wait for the first token). A request the variant
//     never answered (a 504, a refused connection) has none.
//   - modelsplit_variant_duration_seconds: request start → the last byte
//     sent to the client (time_to_last_downstream_tx_byte; a whole
//     generation), or, when nothing was sent, until the request ended.
//   - modelsplit_variant_response_tokens: the count the model server put
//     in the endpoint's tokens_header, as a response trailer (a streamed
//     answer knows it only at the end: gRPC trailing metadata, HTTP/2
//     trailers) or header.
//
// The variant is the one that answered: the response's
// x-modelsplit-variant when it names a variant of the entry's endpoint
// (after a failover the upstream cluster is the variant the request was
// routed to), else the entry's upstream cluster (<endpoint>/<variant>);
// entries for endpoints with observe: false, for clusters the config does
// not name, and without a cluster (404s) are counted in
// modelsplit_access_log_entries_total{result} and dropped.
//
// # Why the access log, not the observe filter
//
// The observe filter (extproc, observability mode) gets request and
// response headers — the first byte — and, when there are any, the
// response trailers: the end of a gRPC call, not of an HTTP answer. The
// end of an HTTP answer reaches an ext_proc server only two ways:
//
//   - response bodies in STREAMED mode: every chunk becomes a gRPC message
//     carrying a copy of the bytes. For a 90-event SSE answer that is 92
//     messages and 11 KB per request instead of 2 messages and 297 B, and
//     about 5× the CPU (BenchmarkTelemetryPerRequest, sender and modelsplit
//     together, three runs on the shared 2-core machine at load 7–9:
//     446–602 µs per request against 72–101 µs for headers only) — paid
//     on every streamed request, growing with the answer.
//   - the moment Envoy closes the observe stream: that is
//     deferred_close_timeout (1 s) after the request ends, not when it
//     ended, and an estimate rather than a measurement.
//
// Envoy's access log measures both ends itself and sends one entry per
// request when the request ends, batched (a message every
// xds.AccessLogFlushInterval, or as soon as xds.AccessLogBufferBytes are
// waiting) on one long-lived stream per Envoy worker, off the request
// path: nothing waits for it and a slow or absent modelsplit only loses
// entries (Envoy's access_logs.grpc_access_log.logs_dropped). Measured:
// a 374 B entry, 44 entries per message once requests come faster than
// the flush interval (0.023 messages per request), 18–20 µs per request
// for sender and modelsplit together in the same benchmark; through a
// real Envoy (TestEnvoyStreamTelemetry), 63 requests over about a second
// arrived in 3 messages. It also reports response headers and trailers
// chosen by name, which is how token counts travel, without reading a
// body.
//
// Not covered: token counts inside the body (an OpenAI-style usage object
// in the last SSE event) — reading it needs every response chunk, the
// cost above; model servers that report usage in a header or trailer are
// counted. Proxyless gRPC clients have no Envoy and so no access log: their
// calls get requests, classes and header latency from the observe filter,
// not these three series.
package accesslog
