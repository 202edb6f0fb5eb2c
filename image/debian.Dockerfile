# bkd's images on a Debian root filesystem made by scripts/image.sh, built
# by bkd itself. Inputs: the named context `base` (the root filesystem from
# mmdebstrap, with runc, rootlesskit, uidmap and ca-certificates) and the
# main context (bin/: buildkitd, buildctl, a stripped bkd and the
# buildctl-daemonless.sh link to it).
#
#   root:      runs as root; privileged pods; state in /var/lib/buildkit
#   rootless:  runs as user (1000:1000); state in /home/user/.local/share/buildkit

FROM base AS common
COPY bin/ /usr/local/bin/
# No BUILDKIT_HOST: bkd starts its own buildkitd unless told where one runs.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["bkd"]
CMD ["--help"]

FROM common AS root
RUN mkdir -p /var/lib/buildkit
WORKDIR /workspace

FROM common AS rootless
# The subordinate ids build steps run as. The default keeps them clear of
# the node's own users; a hostUsers: false pod maps only 65536 ids, so its
# image needs a range inside them (scripts/image.sh --subids 1001:64535).
ARG SUBIDS=100000:65536
# newuidmap/newgidmap get file capabilities instead of the setuid bit: a
# setuid-root newuidmap cannot write uid_map in a pod without CAP_SYS_ADMIN.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/user --shell /bin/sh user \
 && echo "user:$SUBIDS" >/etc/subuid \
 && echo "user:$SUBIDS" >/etc/subgid \
 && mkdir -p /home/user/.local/share/buildkit /home/user/workspace \
 && chown -R 1000:1000 /home/user \
 && chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap \
 && setcap cap_setuid+ep /usr/bin/newuidmap \
 && setcap cap_setgid+ep /usr/bin/newgidmap
USER 1000:1000
ENV USER=user HOME=/home/user
WORKDIR /home/user/workspace
