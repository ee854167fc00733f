# Sourced by scripts/bench.sh and scripts/store-throughput.sh: starts a three-node Garage
# cluster on loopback (replication factor 3, one access key named "bench").
#   garage_cluster DIR   # node configs, data and logs under DIR
# Sets GARAGE_PIDS (the three servers, for the caller to stop), GARAGE_ENDPOINT,
# GARAGE_KEY_ID and GARAGE_SECRET, and defines gcli (the admin CLI on node 0).
garage_cluster() {
  local dir=$1 i rpc s3 secret keyout
  local free_port='import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  rm -rf "$dir" && mkdir -p "$dir"
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  GARAGE_PIDS=()
  local s3ports=()
  for i in 0 1 2; do
    rpc=$(python3 -c "$free_port"); s3=$(python3 -c "$free_port"); s3ports+=("$s3")
    cat > "$dir/node$i.toml" <<TOML
metadata_dir = "$dir/n$i/meta"
data_dir = "$dir/n$i/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
TOML
    RUST_LOG=garage=warn garage -c "$dir/node$i.toml" server >"$dir/node$i.log" 2>&1 &
    GARAGE_PIDS+=($!)
  done
  for s3 in "${s3ports[@]}"; do
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$s3") 2>/dev/null && break; sleep 0.2; done
  done
  GARAGE_CONF=$dir/node0.toml
  gcli() { garage -c "$GARAGE_CONF" "$@"; }
  for i in 1 2; do gcli node connect "$(garage -c "$dir/node$i.toml" node id -q)" >/dev/null; done
  for i in 0 1 2; do gcli layout assign -z dc1 -c 10G "$(garage -c "$dir/node$i.toml" node id -q | cut -c1-16)" >/dev/null; done
  gcli layout apply --version 1 >/dev/null
  keyout=$(gcli key create bench)
  GARAGE_KEY_ID=$(sed -n 's/^ *Key ID: *//p' <<<"$keyout")
  GARAGE_SECRET=$(sed -n 's/^ *Secret key: *//p' <<<"$keyout")
  GARAGE_ENDPOINT=http://127.0.0.1:${s3ports[0]}
}
