// Package notify is keepfs's breach notification: integrity events, the
// incidents they open, and their delivery to an exec hook and a signed
// webhook.
//
// Nouns:
//   - An Event is one detection: a tampered, missing, unexpected or resized
//     object, a rollback, a key slot or config change, a lock by an unknown
//     host, a remote unreachable for too long, repeated failed unlocks.
//   - An Incident is what an event opens in the state directory
//     (incidents.json): further events of the same (type, object) while it
//     is open only count, so one broken pack read 10,000 times is one
//     incident and one delivery per target. It stays open until
//     acknowledged (keepfs incidents ack ID).
//   - A Target is where an incident is delivered: an exec hook (the event
//     JSON on stdin, with a timeout and a few retries) or a webhook (POST
//     of the JSON with X-Keepfs-Signature: sha256=<hex HMAC-SHA256 of the
//     body>), retried with backoff until delivered or the event expires.
//
// Secrets (the webhook's HMAC key, credentials or tokens in its URL, the
// exec command line) never appear in events, logs or incidents: targets
// are named by their redacted form.
//
// The package is a leaf: it imports nothing of keepfs.
package notify
