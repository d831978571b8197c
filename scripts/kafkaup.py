"""kafkaup — the two checks of scripts/kafka-up that need a socket or a UUID.

  python3 kafkaup.py ports-free PORT...
      exit 0 if every PORT can be bound on 127.0.0.1; else print why the first
      busy one cannot (one line, for kafka-up's die) on stdout and exit 1.
      SO_REUSEADDR mirrors what the JVM does, so TIME_WAIT leftovers are not
      false alarms.
  python3 kafkaup.py cluster-id
      print a new KRaft cluster id: a random 16-byte UUID, base64url without
      padding, not starting with '-' (the rule of Kafka's Uuid.randomUuid).
      Python avoids a JVM start.
"""
import base64
import socket
import sys
import uuid


def busy_port(ports):
    """The reason the first port of ports that cannot be bound is busy, or None."""
    for port in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return (f"port 127.0.0.1:{port} is already in use ({e.strerror}); "
                    f"stop whatever holds it (see: ss -ltnp 'sport = :{port}')")
        finally:
            s.close()
    return None


def cluster_id():
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def main(argv):
    if argv[:1] == ["ports-free"]:
        reason = busy_port(map(int, argv[1:]))
        if reason:
            print(reason)
            return 1
        return 0
    if argv == ["cluster-id"]:
        print(cluster_id())
        return 0
    sys.exit("usage: kafkaup.py ports-free PORT... | cluster-id")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
