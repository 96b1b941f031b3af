FROM debian
ENV A="unterminated
