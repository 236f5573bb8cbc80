// Package extproc is the ext_proc gRPC server that Envoy (and grpc-go's
// ext_proc filter) calls once per request: it asks the cohort engine for the
// user's variant and answers with the header that steers Envoy's router.
//
// # Mutation testing
//
// `make mutate PKGS='./extproc:server ./extproc:observe'` mutates this
// package in two runs (scripts/mutate.sh). These surviving mutants are
// equivalent: no input can tell them from the code as written.
//
//   - server.go, Process: `status.Code(err) == codes.Canceled` negated, in
//     `errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled ||
//     ctx.Err() != nil`. Apart from io.EOF (a half-close, tested), a Recv
//     error on a grpc-go server stream comes with the stream's context
//     already done (a client that cancels or whose deadline passes resets
//     the stream; on any other failure grpc-go cancels the context too), so
//     the last condition decides either way.
//   - observe.go, observeRequestHeaders: `o.authority == ""` negated,
//     before taking the request.host attribute. Only grpc-go's observe
//     filter asks for attributes (xds/translate grpcObserveFilter; Envoy's
//     send none, so the block is skipped), and grpc-go sends no
//     :authority, so the mutant leaves a proxyless call's authority empty.
//     Nothing reads it there: a proxyless call is a gRPC call, replayed by
//     shadow's replayGRPC, which does not use Exchange.Authority (only
//     HTTP replays set the Host from it).
//   - observe.go, observeResponseBody: `len(o.captures) > 0` as `>= 0`.
//     With no captures, keepCaptures walks an empty slice and returns it
//     empty: the same.
//
// Not equivalent, and left alive on purpose: `ctx.Err() != nil` negated
// there (and the second `||` as `&&`, which the package's tests kill only
// through streams whose Recv error is not Canceled, a matter of timing).
// The code counts a stream "ok" when Recv fails with any code on a done
// context; the mutants count it "error" when the code is not Canceled —
// what a message that does not decode does (Internal). Such a stream is
// counted "ok" today; whether it should be "error" (or "malformed") is a
// product decision, so no test pins it either way.
package extproc
