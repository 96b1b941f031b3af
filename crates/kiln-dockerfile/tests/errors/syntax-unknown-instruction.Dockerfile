FROM debian
FOO bar
