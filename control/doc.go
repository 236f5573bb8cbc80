// Package control serves live control: it lays the live state over the
// config file and applies the result (xDS, decisions, shadows), makes
// each change — a person's through the admin API, or an automated
// actor's (ApplyAutomated) — under one lock, on the newest stored state,
// saving it compare-and-set so replicas never overwrite each other, and
// keeps replicas in sync by polling the stored revision.
//
// The rules of a change (precedence over the file, superseding, rollback
// history, audit, owners) are package live's; the stores are package
// persist's; the HTTP handlers are package httpapi's. This package wires
// them together and keeps the names service uses (New, Options,
// Register, FilePersister …).
package control
