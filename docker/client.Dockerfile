# The lab's client machine: the command-line clients a networking class uses, for
# `docker compose run --rm client` (a shell on the lab network, resolver = the lab DNS) and
# for the capture profile (tcpdump writing pcaps for Wireshark).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture: the answer is preset (no; we are root).
RUN echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      ca-certificates curl dnsutils swaks mutt lftp smbclient udhcpc tcpdump tshark \
      iproute2 iputils-ping netcat-openbsd less \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY docker/client/ /usr/local/bin/
WORKDIR /root
CMD ["bash", "-l"]
