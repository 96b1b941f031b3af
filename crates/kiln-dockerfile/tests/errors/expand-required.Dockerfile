FROM debian
ENV A=${B:?must_be_set}
