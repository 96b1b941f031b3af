FROM Debian:Bookworm
