/*
 * skein-cni: a chained CNI plugin that hands each CNI call to the node's skein agent.
 *
 * It runs after the pod's network plugin (last in the node's conflist). It decides nothing:
 * it reads the CNI call (config on stdin, CNI_* variables), forwards it over the agent's unix
 * socket, waits for the answer (bounded) and prints what the agent says with the exit code
 * the agent gives. The agent decides whether the pod is meshed and, on ADD, answers only
 * once the pod's netns is captured. Kept small and free of any runtime (as istio-cni's
 * binary is): the kubelet's runtime execs it for every pod of the node.
 *
 * Without the agent:
 *   VERSION  answered here (no agent needed);
 *   ADD      fails with a CNI error (code 11, "try again later"): the runtime retries the
 *            pod sandbox, so a meshed pod never starts uncaptured;
 *   CHECK    fails the same way;
 *   DEL      succeeds (DEL must be idempotent and must not block pod removal); the agent
 *            releases the pod's capture when it is back (the namespace is gone by then).
 * Namespaces named in the config's "exclude_namespaces" are passed through here, without
 * asking the agent (for pods that must start before it, as kube-system's). With the agent
 * unreachable, a namespace listed in `<agent_socket>.unmeshed-namespaces` (the agent keeps
 * the namespaces it saw outside the mesh there) is passed through too; any other waits.
 *
 * Wire to the agent: one JSON object, then the write side is shut down; the answer is the
 * exit code in decimal, a newline, then the bytes to print on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/var/run/skein/cni.sock"
#define DEFAULT_TIMEOUT_MS 30000
#define MAX_INPUT (1 << 20)
#define MAX_ANSWER (4 << 20)

/* CNI spec error codes. */
#define CNI_ERR_INVALID_ENV 4
#define CNI_ERR_IO 5
#define CNI_ERR_DECODE 6
#define CNI_ERR_TRY_AGAIN 11

struct buf {
  char *data;
  size_t len, cap;
};

static void buf_put(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->len + n + 1 > cap) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
      fputs("skein-cni: out of memory\n", stderr);
      exit(1);
    }
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
}

static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* Appends s as a JSON string literal (quotes included); NULL becomes "". */
static void buf_json(struct buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      buf_put(b, esc, 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      buf_put(b, esc, 6);
    } else {
      buf_put(b, (const char *)p, 1);
    }
  }
  buf_put(b, "\"", 1);
}

static const char *cni_version = "1.0.0";

/* Prints a CNI error result on stdout (the spec's place for it) and exits non-zero. */
static void fail(int code, const char *msg, const char *details) {
  struct buf out = {0};
  buf_str(&out, "{\"cniVersion\":");
  buf_json(&out, cni_version);
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  buf_str(&out, num);
  buf_json(&out, msg);
  buf_str(&out, ",\"details\":");
  buf_json(&out, details);
  buf_str(&out, "}\n");
  fwrite(out.data, 1, out.len, stdout);
  fprintf(stderr, "skein-cni: %s: %s\n", msg, details ? details : "");
  exit(1);
}

/*
 * The narrow JSON reading the plugin needs from its config: a top-level key's string value,
 * a top-level key's raw value (object/array), nothing else. The agent parses the whole config.
 */
static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

/* End of the JSON string starting at p (p at the opening quote); NULL when unterminated. */
static const char *string_end(const char *p) {
  for (p++; *p; p++) {
    if (*p == '\\') {
      if (!*++p) return NULL;
    } else if (*p == '"') {
      return p + 1;
    }
  }
  return NULL;
}

/* End of the JSON value at p (string, object, array, or scalar). */
static const char *value_end(const char *p) {
  if (*p == '"') return string_end(p);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    while (*p) {
      if (*p == '"') {
        p = string_end(p);
        if (!p) return NULL;
        continue;
      }
      if (*p == '{' || *p == '[') depth++;
      if (*p == '}' || *p == ']') {
        if (--depth == 0) return p + 1;
      }
      p++;
    }
    return NULL;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']') p++;
  return p;
}

/* The raw value of a top-level key of the object in `json`, as [start, end); 0 when absent. */
static int top_value(const char *json, const char *key, const char **start, const char **end) {
  const char *p = skip_ws(json);
  if (*p != '{') return 0;
  p = skip_ws(p + 1);
  size_t klen = strlen(key);
  while (*p == '"') {
    const char *kend = string_end(p);
    if (!kend) return 0;
    int match = (size_t)(kend - p - 2) == klen && strncmp(p + 1, key, klen) == 0;
    p = skip_ws(kend);
    if (*p != ':') return 0;
    p = skip_ws(p + 1);
    const char *vend = value_end(p);
    if (!vend) return 0;
    if (match) {
      *start = p;
      *end = vend;
      return 1;
    }
    p = skip_ws(vend);
    if (*p != ',') return 0;
    p = skip_ws(p + 1);
  }
  return 0;
}

/* A top-level string value without escapes (paths, versions, names); NULL otherwise. */
static char *top_string(const char *json, const char *key) {
  const char *s, *e;
  if (!top_value(json, key, &s, &e) || *s != '"' || e - s < 2) return NULL;
  if (memchr(s + 1, '\\', (size_t)(e - s - 2))) return NULL;
  return strndup(s + 1, (size_t)(e - s - 2));
}

/* Is `name` one of the strings of the top-level array `key`? */
static int in_string_array(const char *json, const char *key, const char *name) {
  const char *s, *e;
  if (!name || !*name || !top_value(json, key, &s, &e) || *s != '[') return 0;
  const char *p = skip_ws(s + 1);
  size_t n = strlen(name);
  while (p < e && *p == '"') {
    const char *q = string_end(p);
    if (!q) return 0;
    if ((size_t)(q - p - 2) == n && strncmp(p + 1, name, n) == 0) return 1;
    p = skip_ws(q);
    if (*p == ',') p = skip_ws(p + 1);
  }
  return 0;
}

/* The value of KEY in CNI_ARGS ("K=V;K=V"), or NULL. */
static char *cni_arg(const char *args, const char *key) {
  if (!args) return NULL;
  size_t klen = strlen(key);
  for (const char *p = args; *p;) {
    const char *semi = strchr(p, ';');
    size_t len = semi ? (size_t)(semi - p) : strlen(p);
    if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') return strndup(p + klen + 1, len - klen - 1);
    if (!semi) break;
    p = semi + 1;
  }
  return NULL;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {.fd = fd, .events = events};
    int r = poll(&pfd, 1, (int)left);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

static void read_stdin(struct buf *in) {
  char chunk[65536];
  for (;;) {
    ssize_t n = read(0, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(CNI_ERR_IO, "cannot read the network configuration from stdin", strerror(errno));
    if (n == 0) break;
    if (in->len + (size_t)n > MAX_INPUT) fail(CNI_ERR_DECODE, "network configuration on stdin is too large", "over 1 MiB");
    buf_put(in, chunk, (size_t)n);
  }
  if (!in->data) buf_put(in, "", 0);
}

/* ADD: prints prevResult as it came (libcni hands it over in the config's cniVersion). */
static int pass_through(const char *config, int is_add) {
  if (!is_add) return 0;
  const char *ps, *pe;
  if (!top_value(config, "prevResult", &ps, &pe) || *ps != '{') {
    fail(CNI_ERR_DECODE, "skein-cni must be chained after the pod's network plugin", "no prevResult in the configuration");
  }
  fwrite(ps, 1, (size_t)(pe - ps), stdout);
  fputc('\n', stdout);
  return 0;
}

/*
 * Is `ns` in the agent's list of namespaces outside the mesh (`<socket>.unmeshed-namespaces`,
 * one a line, written by the agent while it runs)? Read only when the agent is away. No
 * file, or a namespace not in it: not known to be outside the mesh, so the pod waits.
 */
static int listed_unmeshed(const char *socket_path, const char *ns) {
  if (!ns || !*ns) return 0;
  char path[4200];
  snprintf(path, sizeof path, "%s.unmeshed-namespaces", socket_path);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    found = strcmp(line, ns) == 0;
  }
  fclose(f);
  return found;
}

int main(void) {
  const char *command = getenv("CNI_COMMAND");
  struct buf in = {0};
  if (!command || !*command) fail(CNI_ERR_INVALID_ENV, "CNI_COMMAND is not set", "skein-cni is a CNI plugin: the container runtime runs it");
  if (strcmp(command, "VERSION") == 0) {
    /* No config needed, no agent needed (the spec's VERSION reads only cniVersion). */
    puts("{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}");
    return 0;
  }
  read_stdin(&in);
  char *version = top_string(in.data, "cniVersion");
  if (version) cni_version = version;
  int is_del = strcmp(command, "DEL") == 0;
  int is_add = strcmp(command, "ADD") == 0;

  char *socket_path = top_string(in.data, "agent_socket");
  if (!socket_path) socket_path = strdup(DEFAULT_SOCKET);
  long long timeout_ms = DEFAULT_TIMEOUT_MS;
  const char *ts, *te;
  if (top_value(in.data, "timeout_ms", &ts, &te)) {
    long long t = atoll(ts);
    if (t > 0) timeout_ms = t;
  }

  /* Excluded namespaces never reach the agent: ADD prints prevResult as it came. */
  char *pod_ns = cni_arg(getenv("CNI_ARGS"), "K8S_POD_NAMESPACE");
  if (in_string_array(in.data, "exclude_namespaces", pod_ns)) {
    return pass_through(in.data, is_add);
  }

  struct buf req = {0};
  buf_str(&req, "{\"command\":");
  buf_json(&req, command);
  static const char *const vars[][2] = {
      {"containerId", "CNI_CONTAINERID"}, {"netns", "CNI_NETNS"}, {"ifName", "CNI_IFNAME"},
      {"args", "CNI_ARGS"},               {"path", "CNI_PATH"},
  };
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    buf_str(&req, ",\"");
    buf_str(&req, vars[i][0]);
    buf_str(&req, "\":");
    const char *v = getenv(vars[i][1]);
    if (v) buf_json(&req, v);
    else buf_str(&req, "null");
  }
  buf_str(&req, ",\"stdin\":");
  buf_json(&req, in.data);
  buf_str(&req, "}");

  long long deadline = now_ms() + timeout_ms;
  char why[512];
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof addr.sun_path) fail(CNI_ERR_INVALID_ENV, "agent_socket path too long", socket_path);
  strcpy(addr.sun_path, socket_path);
  int connected = fd >= 0 && (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 || (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 1));
  if (connected) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr) {
      errno = soerr;
      connected = 0;
    }
  }
  if (!connected) {
    if (!is_del && listed_unmeshed(socket_path, pod_ns)) {
      /* The agent's last word: this namespace is outside the mesh. Nothing to capture. */
      fprintf(stderr, "skein-cni: agent at %s unreachable; namespace %s is outside the mesh: passed through\n", socket_path, pod_ns);
      return pass_through(in.data, is_add);
    }
    snprintf(why, sizeof why, "SKEIN_AGENT_CNI_UNREACHABLE: cannot connect to the skein agent at %s: %s", socket_path, strerror(errno));
    if (is_del) {
      /* DEL succeeds: the agent drops capture of a vanished netns on its own once back. */
      fprintf(stderr, "skein-cni: DEL without the agent (%s); the agent releases the pod when it is back\n", why);
      return 0;
    }
    fail(CNI_ERR_TRY_AGAIN, "the skein agent is not reachable: the pod is held until the agent can capture it", why);
  }

  size_t sent = 0;
  while (sent < req.len) {
    if (wait_fd(fd, POLLOUT, deadline) != 1) break;
    ssize_t n = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    sent += (size_t)n;
  }
  if (sent < req.len) {
    snprintf(why, sizeof why, "SKEIN_AGENT_CNI_UNREACHABLE: sending to the skein agent at %s failed: %s", socket_path, strerror(errno));
    if (is_del) return 0;
    fail(CNI_ERR_TRY_AGAIN, "the skein agent did not take the request", why);
  }
  shutdown(fd, SHUT_WR);

  struct buf ans = {0};
  char chunk[65536];
  int done = 0;
  while (!done) {
    int w = wait_fd(fd, POLLIN, deadline);
    if (w != 1) break;
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) break;
    if (n == 0) {
      done = 1;
      break;
    }
    if (ans.len + (size_t)n > MAX_ANSWER) break;
    buf_put(&ans, chunk, (size_t)n);
  }
  close(fd);
  char *nl = ans.data ? strchr(ans.data, '\n') : NULL;
  if (!done || !nl) {
    snprintf(why, sizeof why, "SKEIN_AGENT_CNI_TIMEOUT: no complete answer from the skein agent at %s within %lld ms", socket_path, timeout_ms);
    if (is_del) {
      fprintf(stderr, "skein-cni: %s\n", why);
      return 0;
    }
    fail(CNI_ERR_TRY_AGAIN, "the skein agent did not answer in time: the pod is held", why);
  }
  *nl = 0;
  char *endp;
  long code = strtol(ans.data, &endp, 10);
  if (*endp || endp == ans.data || code < 0 || code > 255) {
    if (is_del) return 0;
    fail(CNI_ERR_DECODE, "the skein agent's answer is malformed", "expected an exit code line");
  }
  size_t body = (size_t)(nl + 1 - ans.data);
  fwrite(ans.data + body, 1, ans.len - body, stdout);
  fflush(stdout);
  return (int)code;
}
