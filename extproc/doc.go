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
