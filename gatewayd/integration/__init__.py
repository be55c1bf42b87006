"""EnOS HTTP message integration: token, event uploads with files, file download/delete,
and file events (outbox drops and captures, stored durably, uploaded once).

Pure cores (`token`, `message`, `multipart`, `replies`, `drops`) hold the rules; `http` is
the only module that imports httpx, and it is imported only when `integration.http` is
configured. File events: `outbox` (the watcher) → `filestore` (committed before sending)
→ `sender` (uploads, dead letters, retries), wired for the daemon by `filetask`.
"""
