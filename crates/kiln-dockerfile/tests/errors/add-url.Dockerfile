FROM debian
ADD https://example.com/x.tgz /x
