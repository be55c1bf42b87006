"""EnOS HTTP message integration: token, event uploads with files, file download/delete.

Pure cores (`token`, `message`, `multipart`, `replies`) hold the rules; `http` is the only
module that imports httpx, and it is imported only when `integration.http` is configured.
"""
