FROM debian
ENV A=${B
