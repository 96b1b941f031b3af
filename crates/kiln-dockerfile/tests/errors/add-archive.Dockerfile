FROM debian
ADD vendor.tar.gz /vendor/
