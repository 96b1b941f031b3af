FROM debian
ADD git@github.com:moby/buildkit.git /src
