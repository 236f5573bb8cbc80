// Package httpapi is the admin API of live control: it routes the
// /v1/endpoints and /v1/audit requests, decodes their bodies strictly,
// and maps the domain's refusals (live.Code) to HTTP statuses. It holds
// no rule of its own: every decision is the Controller's.
package httpapi
