FROM debian:bookworm
RUN <<EOF
set -e
echo one > /one
EOF
RUN <<-EOT bash -e
	echo two > /two
	EOT
RUN <<'SCRIPT'
#!/usr/bin/env python3
print("three")
SCRIPT
ENV NAME=kiln
COPY <<EOF /etc/greeting
hello $NAME
EOF
COPY <<"EOF" <<EOF2 /etc/
raw $NAME
EOF
expanded $NAME
EOF2
