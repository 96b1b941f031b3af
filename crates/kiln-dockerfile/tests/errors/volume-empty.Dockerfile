FROM debian
VOLUME ""
