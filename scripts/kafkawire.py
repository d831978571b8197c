"""kafkawire — the minimal Kafka wire protocol the scripts need, Python stdlib only.

Shared by scripts/kafka-ping (readiness probe: Metadata, optionally over TLS and
after SASL/PLAIN) and scripts/benchtopic.py (the benchmarks' leader and end-offset
polling: Metadata for one topic, ListOffsets). Not a Kafka client: one request at
a time on a blocking socket, old fixed-size API versions only, no retries.

Wire format (all big-endian):
  request:  int32 size | header v1: int16 api_key, int16 api_version,
            int32 correlation_id, string client_id | body
  response: int32 size | int32 correlation_id | body
  string = int16 length + bytes (-1 = null); bytes = int32 length + bytes.
Metadata v1 (3): body array topics (int32 count, -1 = all topics) ->
            brokers [int32 node_id, string host, int32 port, nullable string rack],
            int32 controller_id, topics [int16 error, string name, int8 is_internal,
            partitions [int16 error, int32 partition, int32 leader,
            [int32] replicas, [int32] isr]].
ListOffsets v1 (2): int32 replica_id = -1, topics [string name, partitions
            [int32 partition, int64 timestamp (-1 = latest)]] -> topics [string
            name, partitions [int32 partition, int16 error, int64 timestamp,
            int64 offset]].
SaslHandshake v1 (17): body string mechanism -> int16 error, [string] mechanisms.
SaslAuthenticate v1 (36): body bytes auth -> int16 error, nullable string message,
            bytes auth, int64 session_lifetime_ms.
Kafka 4.1.1 and 3.9.1 still accept all four versions (verified).
"""
import socket
import ssl
import struct

API_LIST_OFFSETS, API_METADATA, API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE = 2, 3, 17, 36


class KafkaError(ValueError):
    """The broker answered, but not what we need (protocol or error code)."""


class Reader:
    """Big-endian reader over one response body (after the correlation id)."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        """One value of struct format fmt (">" is implied), e.g. "i", "h", "q"."""
        fmt = fmt if fmt.startswith(">") else ">" + fmt
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0]

    def string(self):
        """A nullable string, decoded as UTF-8 (None when null)."""
        n = self.take("h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def bytes_(self):
        """A nullable bytes field (None when null)."""
        n = self.take("i")
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def kstring(s):
    """Encode a (non-null) Kafka string."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


class Connection:
    """One blocking connection to one broker; call() sends a request and reads its response."""

    def __init__(self, host, port, timeout, client_id, tls=False, ca=None, cert=None, key=None):
        """tls: speak TLS, verifying the broker against HOST and CA (None = system trust
        store); cert + key: present a client certificate (mTLS)."""
        self.client_id = client_id.encode()
        self.correlation_id = 0
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                ctx = ssl.create_default_context(cafile=ca)
                if cert:
                    ctx.load_cert_chain(cert, key)
                sock = ctx.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def call(self, api_key, api_version, body):
        """Send one request, return a Reader over the response body."""
        self.correlation_id += 1
        header = struct.pack(">hhi", api_key, api_version, self.correlation_id) + kstring(self.client_id)
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        r = Reader(self._recv_exact(size))
        if r.take("i") != self.correlation_id:
            raise KafkaError("correlation id mismatch")
        return r

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf


def metadata(conn, topics=None):
    """Metadata v1 for TOPICS (None = all topics).

    Returns (brokers, leaders): brokers a list of (node_id, host, port) in the
    order the broker sent them; leaders {topic: {partition: leader node_id}}
    (a topic that does not exist has no partitions).
    """
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics)
    r = conn.call(API_METADATA, 1, body)
    brokers = []
    for _ in range(r.take("i")):
        node_id, host, port = r.take("i"), r.string(), r.take("i")
        r.string()  # rack, nullable
        brokers.append((node_id, host, port))
    r.take("i")  # controller id
    leaders = {}
    for _ in range(r.take("i")):
        r.take("h")  # topic error: an unknown topic simply has no partitions
        name = r.string()
        r.take("b")  # is_internal
        parts = leaders.setdefault(name, {})
        for _ in range(r.take("i")):
            r.take("h")
            partition, leader = r.take("i"), r.take("i")
            for _ in range(2):  # replicas, isr
                for _ in range(r.take("i")):
                    r.take("i")
            parts[partition] = leader
    return brokers, leaders


def list_offsets(conn, topic, partitions, timestamp=-1):
    """ListOffsets v1 for PARTITIONS of TOPIC on their leader CONN: {partition: offset}.

    timestamp -1 = the latest offset (high watermark), -2 = the earliest.
    """
    body = struct.pack(">ii", -1, 1) + kstring(topic) + struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iq", p, timestamp)
    r = conn.call(API_LIST_OFFSETS, 1, body)
    offsets = {}
    for _ in range(r.take("i")):
        r.string()
        for _ in range(r.take("i")):
            p, err = r.take("i"), r.take("h")
            r.take("q")  # timestamp
            offset = r.take("q")
            if err:
                raise KafkaError("ListOffsets partition %d: error %d" % (p, err))
            offsets[p] = offset
    return offsets


def sasl_plain(conn, user, password):
    """SASL/PLAIN login (SaslHandshake v1 + SaslAuthenticate v1) as the first thing on CONN.

    Returns the session lifetime in ms the broker set (0 = none; KIP-368 re-authentication).
    """
    r = conn.call(API_SASL_HANDSHAKE, 1, kstring("PLAIN"))
    err = r.take("h")
    mechs = [r.string() for _ in range(r.take("i"))]
    if err:
        raise KafkaError(f"SASL mechanism PLAIN not enabled (error {err}); broker offers {','.join(mechs) or 'none'}")
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = conn.call(API_SASL_AUTHENTICATE, 1, struct.pack(">i", len(token)) + token)
    err, msg = r.take("h"), r.string()
    r.bytes_()
    lifetime = r.take("q")
    if err:
        raise KafkaError(f"SASL/PLAIN authentication as {user!r} failed (error {err}): {msg}")
    return lifetime


def split_address(address, default_host="127.0.0.1"):
    """"HOST:PORT" (or ":PORT", "PORT") -> (host, int port)."""
    host, _, port = address.rpartition(":")
    return host or default_host, int(port)
