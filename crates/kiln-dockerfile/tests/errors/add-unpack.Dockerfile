FROM debian
ADD --unpack=maybe vendor.tar.gz /vendor/
