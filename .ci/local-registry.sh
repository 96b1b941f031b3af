# Sourced, not run: `start_local_registry WORK` starts Debian's
# docker-registry on 127.0.0.1 and the first free port from 5000, storing
# under WORK/registry, and waits until it answers. It sets `port` and
# `reg_pid` (the caller's cleanup kills it); on a registry that dies at
# start, it prints the registry's log and exits 1.
start_local_registry() {
  local work=$1
  port=5000
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$reg_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "docker-registry did not answer on 127.0.0.1:$port" >&2
  exit 1
}
