#!/bin/sh
# Uses the secret without ever writing it out.
if [ -s /run/secrets/token ]; then
    echo "hello, the build saw a token of $(wc -c < /run/secrets/token) bytes"
fi
