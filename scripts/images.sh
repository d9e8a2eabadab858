#!/usr/bin/env bash
# Seed the local registry with small OCI images built from distro packages (busybox-static).
#
#   CF_REGISTRY_PORT=5001 CF_IMAGES_DIR=.run/images scripts/images.sh
#
# Images (OCI manifests, host platform):
#   library/hello-world:latest    /hello prints the Docker greeting and exits 0
#   library/busybox:latest        /bin/busybox + applet symlinks, Cmd ["sh"]
#   library/busybox:multilayer    busybox:latest + a layer adding /etc/motd
#
# The OCI layout in CF_IMAGES_DIR is a cache keyed on this script and the busybox binary;
# a push happens only when the registry lacks the manifest digest of the layout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PORT="${CF_REGISTRY_PORT:-${CF_DEMO_REGISTRY_PORT:-5001}}"
CACHE="${CF_IMAGES_DIR:-$ROOT/.run/images}"
LAYOUT="$CACHE/oci"
REGISTRY="127.0.0.1:$PORT"
BUSYBOX=/bin/busybox

APPLETS=(sh httpd nc env hostname sleep cat echo ls ps ip ifconfig wget id true false mkdir
  printf grep date rm cp mv ln chmod touch head tail sed awk wc uname ping nslookup)

# "<layout tag> <registry repo:tag>"
IMAGES=(
  "hello-world-latest library/hello-world:latest"
  "busybox-latest library/busybox:latest"
  "busybox-multilayer library/busybox:multilayer"
)

log() { printf '%s\n' "images: $*"; }
die() { printf '%s\n' "images: ERROR: $*" >&2; exit 1; }

cache_key() {
  cat "${BASH_SOURCE[0]}" "$BUSYBOX" | sha256sum | cut -d' ' -f1
}

# new_image TAG DIR: a fresh single-layer image from the contents of DIR.
new_image() {
  local tag="$1" src="$2" bundle="$CACHE/work/bundle-$1"
  umoci new --image "$LAYOUT:$tag"
  umoci unpack --image "$LAYOUT:$tag" "$bundle" >/dev/null
  cp -a "$src/." "$bundle/rootfs/"
  umoci repack --image "$LAYOUT:$tag" "$bundle"
  rm -rf "$bundle"
}

stage_busybox() {
  local dir="$1" a
  mkdir -p "$dir/bin" "$dir/usr/bin" "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  install -m 0755 "$BUSYBOX" "$dir/bin/busybox"
  for a in "${APPLETS[@]}"; do ln -sf busybox "$dir/bin/$a"; done
  # Minimal identity files so id/ps/whoami show names.
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

build_hello_world() {
  local dir="$CACHE/work/hello"
  mkdir -p "$dir/bin"
  install -m 0755 "$BUSYBOX" "$dir/bin/busybox"
  ln -sf busybox "$dir/bin/sh"
  cat >"$dir/hello" <<'EOF'
#!/bin/busybox sh
cat <<'MSG'
Hello from Docker!
This message shows that your installation appears to be working correctly.

This image was served by container-factory's local registry (built from busybox-static).
MSG
EOF
  ln -sf busybox "$dir/bin/cat"
  chmod 0755 "$dir/hello"
  new_image hello-world-latest "$dir"
  umoci config --image "$LAYOUT:hello-world-latest" --clear=config.cmd --clear=config.env \
    --config.cmd /hello --config.env PATH=/bin
}

build_busybox() {
  local dir="$CACHE/work/busybox"
  stage_busybox "$dir"
  new_image busybox-latest "$dir"
  umoci config --image "$LAYOUT:busybox-latest" --clear=config.cmd --clear=config.env \
    --config.cmd sh --config.env PATH=/bin:/usr/bin
}

build_multilayer() {
  local dir="$CACHE/work/motd"
  mkdir -p "$dir/etc"
  printf 'Welcome to busybox:multilayer (second layer) from container-factory.\n' >"$dir/etc/motd"
  umoci tag --image "$LAYOUT:busybox-latest" busybox-multilayer
  umoci insert --image "$LAYOUT:busybox-multilayer" "$dir/etc/motd" /etc/motd
}

# (Re)build the OCI layout unless the cache matches this script and busybox binary.
build_layout() {
  local key
  key="$(cache_key)"
  if [[ -f "$LAYOUT/index.json" && "$(cat "$CACHE/key" 2>/dev/null)" == "$key" ]]; then
    return 0
  fi
  [[ -x "$BUSYBOX" ]] || die "$BUSYBOX is missing (apt-get install busybox-static)"
  log "building OCI images in $LAYOUT"
  rm -rf "$LAYOUT" "$CACHE/work" "$CACHE/key"
  mkdir -p "$CACHE/work"
  umoci init --layout "$LAYOUT"
  build_hello_world
  build_busybox
  build_multilayer
  add_media_types
  umoci gc --layout "$LAYOUT"
  rm -rf "$CACHE/work"
  echo "$key" >"$CACHE/key"
}

# umoci 0.4 omits the manifest's mediaType; registries and Docker Hub images carry it, and
# clients that read the body rather than Content-Type expect it. Rewrite each manifest blob.
add_media_types() {
  local mt=application/vnd.oci.image.manifest.v1+json entry tag old new size tmp
  for entry in "${IMAGES[@]}"; do
    read -r tag _ <<<"$entry"
    old="$(layout_digest "$tag")"
    tmp="$CACHE/work/manifest.json"
    jq -cj --arg mt "$mt" '{schemaVersion, mediaType: $mt} + .' "$LAYOUT/blobs/${old/://}" >"$tmp"
    new="sha256:$(sha256sum "$tmp" | cut -d' ' -f1)"
    size="$(stat -c %s "$tmp")"
    mv -f "$tmp" "$LAYOUT/blobs/${new/://}"
    jq --arg t "$tag" --arg d "$new" --argjson s "$size" --arg mt "$mt" \
      '.manifests |= map(if .annotations["org.opencontainers.image.ref.name"] == $t
        then .digest = $d | .size = $s | .mediaType = $mt else . end)' \
      "$LAYOUT/index.json" >"$CACHE/work/index.json"
    mv -f "$CACHE/work/index.json" "$LAYOUT/index.json"
  done
}

layout_digest() {
  jq -r --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$LAYOUT/index.json"
}

registry_digest() {
  local repo="${1%:*}" tag="${1##*:}"
  curl -fsS --max-time 5 -o /dev/null -D - \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$repo/manifests/$tag" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2}'
}

push_images() {
  local entry tag ref want
  for entry in "${IMAGES[@]}"; do
    read -r tag ref <<<"$entry"
    want="$(layout_digest "$tag")"
    [[ -n "$want" ]] || die "tag $tag missing in $LAYOUT"
    if [[ "$(registry_digest "$ref" || true)" == "$want" ]]; then
      continue
    fi
    log "pushing $REGISTRY/$ref ($want)"
    skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
      "oci:$LAYOUT:$tag" "docker://$REGISTRY/$ref"
    [[ "$(registry_digest "$ref")" == "$want" ]] || die "registry digest of $ref differs from $want after push"
  done
}

main() {
  curl -fsS --max-time 5 -o /dev/null "http://$REGISTRY/v2/" || die "registry $REGISTRY does not answer"
  build_layout
  push_images
  log "registry $REGISTRY has ${#IMAGES[@]} images (hello-world:latest, busybox:latest, busybox:multilayer)"
}

main "$@"
