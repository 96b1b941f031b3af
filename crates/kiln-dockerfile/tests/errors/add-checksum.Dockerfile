FROM debian
ADD --checksum=sha256:00 a /b
