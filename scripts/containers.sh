# Shared by the container scripts: podman with the project's own settings, the local base image, the
# images of the compose stack. Sourced after lib.sh.

# Everything podman keeps for Hailstorm (settings, image storage, the base image's tree) lives here.
containers_dir="$PWD/.build-containers"
# Every image the compose stack uses besides the services' own (Redis's also in the Kubernetes manifests).
backend_images=(redis etcd prometheus)

# The Hailstorm services on main: one folder under Services/ each, named in kebab case (OrderGrab → order-grab).
hailstorm_services() {
    local folder
    for folder in Services/*/; do
        folder=${folder%/}
        echo "${folder#Services/}" | sed -E 's/([a-z0-9])([A-Z])/\1-\2/g' | tr '[:upper:]' '[:lower:]'
    done
}

# Installs podman, podman-compose and debootstrap when missing, and points podman at settings that work
# without systemd and without a registry: runc, cgroupfs, file events, raised ulimits, storage kept under
# .build-containers/.
#
# Storage is overlay through fuse-overlayfs where the machine has /dev/fuse: an image layer or a
# container's root is then a view of the layers below it. Otherwise it is vfs, which copies the whole tree
# for every layer of every image and for every container (a service image is ~330 MB: building the
# images and starting the stacks on vfs took about 10 minutes of the test command). HAILSTORM_PODMAN_STORAGE
# (overlay or vfs) chooses. Each driver has its own folder: podman refuses storage made by another driver.
ensure_podman() {
    local missing=()
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v podman-compose >/dev/null 2>&1 || missing+=(podman-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    [ -x /usr/lib/podman/netavark ] || missing+=(netavark)
    [ -x /usr/lib/podman/aardvark-dns ] || missing+=(aardvark-dns)
    # `podman kube play` builds its pods' pause image from catatonit (not a dependency of podman's package).
    command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
    local driver=${HAILSTORM_PODMAN_STORAGE:-}
    if [ -z "$driver" ]; then
        if [ -c /dev/fuse ]; then driver=overlay; else driver=vfs; fi
    fi
    case "$driver" in
        overlay) command -v fuse-overlayfs >/dev/null 2>&1 || missing+=(fuse-overlayfs) ;;
        vfs) ;;
        *) echo "HAILSTORM_PODMAN_STORAGE is overlay or vfs, not '$driver'" >&2; return 1 ;;
    esac
    install_packages "${missing[@]}"

    mkdir -p "$containers_dir"
    cat >"$containers_dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    if [ "$driver" = overlay ]; then
        cat >"$containers_dir/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$containers_dir/storage-overlay"
runroot = "$containers_dir/run-overlay"

[storage.options.overlay]
mount_program = "$(command -v fuse-overlayfs)"
EOF
    else
        cat >"$containers_dir/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$containers_dir/storage"
runroot = "$containers_dir/run"
EOF
    fi
    export CONTAINERS_CONF="$containers_dir/containers.conf"
    export CONTAINERS_STORAGE_CONF="$containers_dir/storage.conf"
}

# The runtime base image, made locally when no registry can be reached: Debian 12 (minbase) from
# debootstrap, imported under the name the Dockerfiles use.
ensure_base_image() {
    local name=docker.io/library/debian:bookworm-slim
    if podman image exists "$name"; then return 0; fi
    if podman pull -q "$name" >/dev/null 2>&1; then return 0; fi
    say "Making the base image $name with debootstrap (no registry reachable)"
    local tree="$containers_dir/rootfs"
    rm -rf "$tree"
    debootstrap --variant=minbase bookworm "$tree" http://deb.debian.org/debian >"$containers_dir/debootstrap.log" 2>&1 \
        || { echo "debootstrap failed; see $containers_dir/debootstrap.log" >&2; return 1; }
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
    # With the PATH and command the published image has; `podman kube play` gives an image no PATH of its own.
    tar -C "$tree" -c . | podman import -q \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["bash"]' \
        - "$name" >/dev/null
    rm -rf "$tree"
}

# build_base_images TAG → what needs no Hailstorm binary: hailstorm/NAME:TAG for Redis, etcd and
# Prometheus, and the layers every service's image shares (compose/Dockerfile's stage runtime-base).
# Mostly downloads (apt inside each), so scripts/test.sh makes them while the package compiles; build_images
# then finds them in podman's cache.
build_base_images() {
    local tag=$1 name
    for name in "${backend_images[@]}"; do
        say "Image hailstorm/$name:$tag"
        podman build -q --format docker -f compose/backends.Dockerfile --target "$name" -t "hailstorm/$name:$tag" . >/dev/null
    done
    say "The layers the services' images share"
    podman build -q --format docker -f compose/Dockerfile --build-arg BINARIES=prebuilt --target runtime-base . >/dev/null
}

# build_images TAG → hailstorm/NAME:TAG for Redis, etcd and every service, the services from the release
# binaries in .build-containers/bin/ (prepare_release_binaries).
build_images() {
    local tag=$1 name
    build_base_images "$tag"
    # Two at a time: a service's image is its binary copied into a layer and the layer committed, mostly
    # the kernel's work in podman's storage, and one build at a time left a core idle (two images in 31 s
    # side by side, 47 s one after the other).
    local building=0 failed=0
    for name in $(hailstorm_services); do
        say "Image hailstorm/$name:$tag"
        podman build -q --format docker -f compose/Dockerfile --build-arg BINARIES=prebuilt --build-arg SERVICE="$name" \
            -t "hailstorm/$name:$tag" . >/dev/null &
        building=$((building + 1))
        if [ "$building" -ge 2 ]; then
            wait -n || failed=$((failed + 1))
            building=$((building - 1))
        fi
    done
    while [ "$building" -gt 0 ]; do
        wait -n || failed=$((failed + 1))
        building=$((building - 1))
    done
    [ "$failed" -eq 0 ] || { echo "$failed of the services' images failed to build (podman's reasons above)" >&2; return 1; }
    # The staging layers of the prebuilt binaries, now in the images: no need to keep them twice.
    podman image prune -f >/dev/null
}

# The release binaries the images carry, copied to .build-containers/bin/; sets release_bin (where the
# host's `hailstorm` tool of the same build is). Two ways:
# - HAILSTORM_RELEASE_BIN names a release build already made (scripts/test.sh builds once, tests and
#   images alike): its binaries load the Swift runtime, so the runtime libraries they need are copied
#   beside them (bin/lib/, one layer every image shares);
# - otherwise a release build with the Swift standard library and Foundation linked in statically
#   (.build-static), so the runtime image needs only libsqlite3 and libhiredis.
prepare_release_binaries() {
    local bin name
    rm -rf "$containers_dir/bin"
    mkdir -p "$containers_dir/bin/lib"
    if [ -n "${HAILSTORM_RELEASE_BIN:-}" ]; then
        bin=$HAILSTORM_RELEASE_BIN
        say "Images from the release build in $bin (the Swift runtime libraries copied beside the binaries)"
        for name in $(hailstorm_services); do
            ldd "$bin/hailstorm-$name" | awk '$3 ~ /\/lib\/swift\/linux\// { print $3 }'
        done | sort -u | while read -r library; do
            strip --strip-debug -o "$containers_dir/bin/lib/$(basename "$library")" "$library"
        done
    else
        say "Building the release binaries with the static Swift standard library (the first build takes a while)"
        swift build -c release --static-swift-stdlib --scratch-path .build-static
        bin=$(swift build -c release --static-swift-stdlib --scratch-path .build-static --show-bin-path)
    fi
    # Without the debug sections (a third of the size); the symbol table stays, so backtraces name functions.
    for name in $(hailstorm_services); do
        strip --strip-debug -o "$containers_dir/bin/hailstorm-$name" "$bin/hailstorm-$name"
    done
    release_bin=$bin
}
