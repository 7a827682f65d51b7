/* fastsub: peerbench's subscriber process (loadgen/sub.js) in C, for rooms too big for it.
 *
 * peerbench reads every subscriber's socket from one Node process; at 5,000 subscribers it
 * spends ~14 us per frame and the servers write faster than that, so its latencies measure
 * it more than the server (bench/RESULTS.md, section 28). fastsub speaks the same command
 * line, stdin commands and JSON lines as sub.js (the modes raw, raw-welcome and json-sub;
 * --url or --url-file, --n, --m, --epoch, --concurrency, --drain-idle, --drain-max,
 * --hard-timeout, --sub-frame, --sub-ack), so bench.py runs it in sub.js's place through
 * bench/fastsub/node (see bench/fastsub/run.sh). Latencies are taken as sub.js takes them:
 * CLOCK_MONOTONIC at the read, minus the "t" the publisher put in the payload, into the
 * same log-linear histogram (exact below 2,048 us, then 1,024 buckets per power of two).
 *
 * One thread, epoll, level-triggered; one read of up to 64 KiB per ready socket per turn.
 * Plain ws:// on IPv4 addresses only. Server frames may be text or binary, fragmented
 * frames are not expected (neither server sends them); pings are answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum proto { RAW, RAW_WELCOME, JSON_SUB };
enum state { IDLE, CONNECTING, UPGRADING, WAITING, SUBSCRIBED, DEAD };

struct conn {
  int fd;
  enum state state;
  int attempts;
  char *buf;             /* received, not yet parsed */
  size_t len, cap;
  uint32_t count;        /* payload frames received */
  double last_seq;
};

/* ---- options ---- */
static const char *opt_url = NULL, *opt_url_file = NULL, *opt_sub_frame = "", *opt_sub_ack = "\"ack\"";
static enum proto opt_proto = RAW;
static int opt_n = 1000, opt_m = 0, opt_conc = 64;
static double opt_drain_idle_ms = 3000, opt_drain_max_ms = 120000, opt_hard_ms = 600000;
static int64_t opt_epoch = 0;
static int opt_per_event = 0;   /* --per-event 1: each event's latest arrival, in the result */
static double *event_max_us;    /* per sequence number, when --per-event */

static char **urls;      /* one per client (i mod count) */
static int n_urls;
static struct conn *conns;
static int epfd;

/* ---- counters (as sub.js) ---- */
static uint64_t received, out_of_order, bad_frames, expected_total;
static int64_t first_recv, last_recv, go_t, pubdone_t;
static int subscribed, failed, closed_after_sub, errors_seen, retries, done_connecting, go, pubdone;
static struct rusage go_usage;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - opt_epoch;
}

/* ---- the histogram of common.js ---- */
#define HBUCKETS (2048 + 24 * 1024)
static double hist[HBUCKETS], h_n, h_sum, h_max, h_min = INFINITY;

static void hist_add(double us) {
  if (us < 0) us = 0;
  us = floor(us);
  if (us > h_max) h_max = us;
  if (us < h_min) h_min = us;
  h_sum += us;
  h_n++;
  int idx;
  if (us < 2048) idx = (int)us;
  else {
    if (us > 4294967295.0) us = 4294967295.0;
    uint32_t u = (uint32_t)us;
    int e = 31 - __builtin_clz(u) - 10;
    idx = 2048 + (e - 1) * 1024 + (int)((u >> e) - 1024);
  }
  hist[idx]++;
}

static double hist_value(int idx) {
  if (idx < 2048) return idx;
  int e = (idx - 2048) / 1024 + 1;
  int m = (idx - 2048) % 1024 + 1024;
  return m * pow(2, e) + (pow(2, e) - 1) / 2;
}

static double hist_pct(double p) {
  double target = ceil(h_n * p / 100), acc = 0;
  for (int i = 0; i < HBUCKETS; i++) {
    acc += hist[i];
    if (acc >= target) return fmin(hist_value(i), h_max);
  }
  return h_max;
}

/* ---- helpers ---- */
static double rss_mb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
  return rss * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static void emit(const char *line) { fputs(line, stdout); fputc('\n', stdout); fflush(stdout); }

static int parse_url(const char *url, struct sockaddr_in *addr, const char **path) {
  char host[64];
  int port = 80;
  if (strncmp(url, "ws://", 5) != 0) return -1;
  const char *h = url + 5, *slash = strchr(h, '/'), *colon = strchr(h, ':');
  if (!slash) slash = h + strlen(h);
  const char *hend = colon && colon < slash ? colon : slash;
  if ((size_t)(hend - h) >= sizeof host) return -1;
  memcpy(host, h, hend - h);
  host[hend - h] = 0;
  if (colon && colon < slash) port = atoi(colon + 1);
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_port = htons(port);
  if (inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &addr->sin_addr) != 1) return -1;
  *path = *slash ? slash : "/";
  return 0;
}

static int send_all(int fd, const char *data, size_t len) {
  while (len) {   /* small writes to a fresh socket: they fit its buffer */
    ssize_t k = send(fd, data, len, MSG_NOSIGNAL);
    if (k < 0) { if (errno == EINTR) continue; return -1; }
    data += k;
    len -= (size_t)k;
  }
  return 0;
}

static int send_frame(int fd, int opcode, const char *payload, size_t n) {
  unsigned char out[16 + 4096];
  if (n > 4096) return -1;
  size_t h = 0;
  out[h++] = 0x80 | opcode;
  if (n < 126) out[h++] = 0x80 | n;
  else { out[h++] = 0x80 | 126; out[h++] = n >> 8; out[h++] = n & 255; }
  const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  memcpy(out + h, mask, 4);
  h += 4;
  for (size_t i = 0; i < n; i++) out[h + i] = payload[i] ^ mask[i & 3];
  return send_all(fd, (const char *)out, h + n);
}

/* ---- connecting ---- */
static int next_client, in_flight;
static void start_more(void);

static void conn_close(struct conn *c) {
  if (c->fd >= 0) { epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); }
  c->fd = -1;
  c->len = 0;
}

static void settle(struct conn *c, int ok) {
  in_flight--;
  if (ok) { c->state = SUBSCRIBED; subscribed++; }
  else {
    conn_close(c);
    if (++c->attempts < 3) { retries++; c->state = IDLE; }
    else { c->state = DEAD; failed++; }
  }
  start_more();
}

static void begin(int i) {
  struct conn *c = &conns[i];
  struct sockaddr_in addr;
  const char *path;
  if (parse_url(urls[i % n_urls], &addr, &path) < 0) { c->state = DEAD; failed++; return; }
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) { c->state = DEAD; failed++; errors_seen++; return; }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  in_flight++;
  c->state = CONNECTING;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
  epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    errors_seen++;
    settle(c, 0);
  }
}

static void start_more(void) {
  for (;;) {
    if (in_flight >= opt_conc) return;
    int i = -1;
    for (int k = 0; k < opt_n; k++)   /* retries first, then new clients */
      if (conns[k].state == IDLE && conns[k].attempts > 0) { i = k; break; }
    if (i < 0 && next_client < opt_n) i = next_client++;
    if (i < 0) break;
    begin(i);
  }
  if (!done_connecting && in_flight == 0 && next_client >= opt_n) {
    done_connecting = 1;
    expected_total = (uint64_t)subscribed * opt_m;
  }
}

static void on_connected(int i) {
  struct conn *c = &conns[i];
  int err = 0;
  socklen_t l = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
  if (err) { errors_seen++; settle(c, 0); return; }
  struct sockaddr_in addr;
  const char *path;
  parse_url(urls[i % n_urls], &addr, &path);
  char req[8192];
  int k = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   path, inet_ntoa(addr.sin_addr), ntohs(addr.sin_port));
  if (k <= 0 || k >= (int)sizeof req || send_all(c->fd, req, (size_t)k) < 0) { errors_seen++; settle(c, 0); return; }
  c->state = UPGRADING;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* ---- frames ---- */
static void finish(const char *reason);

static void on_payload(struct conn *c, const unsigned char *p, size_t n) {
  int64_t t0 = now_ns();
  double t = -1, s = -1;
  size_t j = 0;
  for (; j + 3 < n; j++)
    if (p[j] == '"' && p[j + 1] == 't' && p[j + 2] == '"' && p[j + 3] == ':') {
      j += 4; while (j < n && p[j] == ' ') j++;
      double v = 0; for (; j < n && p[j] >= '0' && p[j] <= '9'; j++) v = v * 10 + (p[j] - '0');
      t = v; break;
    }
  for (; j + 3 < n; j++)
    if (p[j] == '"' && p[j + 1] == 's' && p[j + 2] == '"' && p[j + 3] == ':') {
      j += 4; while (j < n && p[j] == ' ') j++;
      double v = 0; for (; j < n && p[j] >= '0' && p[j] <= '9'; j++) v = v * 10 + (p[j] - '0');
      s = v; break;
    }
  if (t < 0 || s < 0) { bad_frames++; return; }
  hist_add((t0 - t) / 1000);
  if (event_max_us && s < opt_m && (t0 - t) / 1000 > event_max_us[(int)s]) event_max_us[(int)s] = (t0 - t) / 1000;
  if (s <= c->last_seq) out_of_order++;
  c->last_seq = s;
  c->count++;
  if (received == 0) first_recv = t0;
  last_recv = t0;
  received++;
  if (go && expected_total > 0 && received >= expected_total) finish("complete");
}

static void on_message(int i, const unsigned char *p, size_t n) {
  struct conn *c = &conns[i];
  if (c->state == SUBSCRIBED) {
    if (opt_proto == JSON_SUB && !memmem(p, n, "\"t\":", 4)) return;
    on_payload(c, p, n);
  } else if (c->state == WAITING) {
    if (opt_proto == RAW_WELCOME || memmem(p, n, opt_sub_ack, strlen(opt_sub_ack))) settle(c, 1);
  }
}

/* Parse whole frames from c->buf; 0, or -1 when the connection ends. */
static int parse_frames(int i) {
  struct conn *c = &conns[i];
  size_t off = 0;
  while (c->len - off >= 2) {
    const unsigned char *b = (const unsigned char *)c->buf + off;
    int opcode = b[0] & 15;
    uint64_t n = b[1] & 127;
    size_t h = 2;
    if (n == 126) { if (c->len - off < 4) break; n = (b[2] << 8) | b[3]; h = 4; }
    else if (n == 127) {
      if (c->len - off < 10) break;
      n = 0; for (int k = 2; k < 10; k++) n = (n << 8) | b[k];
      h = 10;
    }
    if (b[1] & 0x80) h += 4;   /* servers do not mask; skip a key if one did */
    if (c->len - off < h + n) break;
    const unsigned char *payload = b + h;
    if (opcode == 1 || opcode == 2) on_message(i, payload, n);
    else if (opcode == 9) send_frame(c->fd, 10, (const char *)payload, n);
    else if (opcode == 8) return -1;
    off += h + n;
  }
  if (off) { memmove(c->buf, c->buf + off, c->len - off); c->len -= off; }
  return 0;
}

static char rbuf[65536];

static void on_readable(int i) {
  struct conn *c = &conns[i];
  ssize_t k = recv(c->fd, rbuf, sizeof rbuf, 0);
  if (k < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (k <= 0) {
    if (c->state == SUBSCRIBED) { closed_after_sub++; conn_close(c); c->state = DEAD; }
    else { errors_seen += k < 0; settle(c, 0); }
    return;
  }
  if (c->len + (size_t)k > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + (size_t)k) cap *= 2;
    c->buf = realloc(c->buf, cap);
    c->cap = cap;
  }
  memcpy(c->buf + c->len, rbuf, (size_t)k);
  c->len += (size_t)k;
  if (c->state == UPGRADING) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return;
    if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) { errors_seen++; settle(c, 0); return; }
    size_t head = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + head, c->len - head);
    c->len -= head;
    if (opt_proto == RAW) { settle(c, 1); }
    else {
      c->state = WAITING;
      if (opt_proto == JSON_SUB && send_frame(c->fd, 1, opt_sub_frame, strlen(opt_sub_frame)) < 0) {
        errors_seen++; settle(c, 0); return;
      }
    }
  }
  if (c->fd >= 0 && parse_frames(i) < 0) {   /* a close frame */
    if (c->state == SUBSCRIBED) { closed_after_sub++; conn_close(c); c->state = DEAD; }
    else settle(c, 0);
  }
}

/* ---- results ---- */
static int finished;

static void finish(const char *reason) {
  if (finished) return;
  finished = 1;
  struct rusage now;
  getrusage(RUSAGE_SELF, &now);
  struct rusage *from = go ? &go_usage : NULL;
  double user = now.ru_utime.tv_sec + now.ru_utime.tv_usec / 1e6, sys = now.ru_stime.tv_sec + now.ru_stime.tv_usec / 1e6;
  if (from) {
    user -= from->ru_utime.tv_sec + from->ru_utime.tv_usec / 1e6;
    sys -= from->ru_stime.tv_sec + from->ru_stime.tv_usec / 1e6;
  }
  uint32_t cmin = UINT32_MAX, cmax = 0, zero = 0;
  for (int i = 0; i < opt_n; i++) {
    uint32_t k = conns[i].count;
    if (k < cmin) cmin = k;
    if (k > cmax) cmax = k;
    if (!k) zero++;
  }
  if (event_max_us) {
    printf("{\"event\":\"per_event\",\"max_ms\":[");
    for (int k = 0; k < opt_m; k++) printf("%s%.1f", k ? "," : "", event_max_us[k] / 1000);
    printf("]}\n");
  }
  char line[4096];
  if (h_n)
    snprintf(line, sizeof line,
             "{\"event\":\"result\",\"reason\":\"%s\",\"n\":%d,\"m\":%d,\"subscribed\":%d,\"failed\":%d,"
             "\"closed_after_sub\":%d,\"received\":%llu,\"expected_total\":%llu,\"expected_subscribed\":%llu,"
             "\"out_of_order\":%llu,\"bad_frames\":%llu,\"per_client_min\":%u,\"per_client_max\":%u,\"clients_zero\":%u,"
             "\"first_recv_ns\":%lld,\"last_recv_ns\":%lld,\"go_ns\":%lld,\"pubdone_ns\":%lld,\"finish_ns\":%lld,"
             "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f,\"elu\":null,\"lat\":{\"n\":%.0f,\"min_us\":%.0f,\"mean_us\":%.3f,"
             "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p95_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.0f},"
             "\"mem_rss_mb\":%.1f}",
             reason, opt_n, opt_m, subscribed, failed, closed_after_sub, (unsigned long long)received,
             (unsigned long long)opt_n * opt_m, (unsigned long long)expected_total, (unsigned long long)out_of_order,
             (unsigned long long)bad_frames, cmin, cmax, zero, (long long)first_recv, (long long)last_recv,
             (long long)go_t, (long long)pubdone_t, (long long)now_ns(), user, sys, h_n, h_min, h_sum / h_n,
             hist_pct(50), hist_pct(90), hist_pct(95), hist_pct(99), hist_pct(99.9), h_max, rss_mb());
  else
    snprintf(line, sizeof line,
             "{\"event\":\"result\",\"reason\":\"%s\",\"n\":%d,\"m\":%d,\"subscribed\":%d,\"failed\":%d,"
             "\"closed_after_sub\":%d,\"received\":0,\"expected_total\":%llu,\"expected_subscribed\":%llu,"
             "\"out_of_order\":0,\"bad_frames\":%llu,\"per_client_min\":%u,\"per_client_max\":%u,\"clients_zero\":%u,"
             "\"first_recv_ns\":0,\"last_recv_ns\":0,\"go_ns\":%lld,\"pubdone_ns\":%lld,\"finish_ns\":%lld,"
             "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f,\"elu\":null,\"lat\":{\"n\":0,\"min_us\":null,\"mean_us\":null,"
             "\"p50_us\":null,\"p90_us\":null,\"p95_us\":null,\"p99_us\":null,\"p999_us\":null,\"max_us\":null},"
             "\"mem_rss_mb\":%.1f}",
             reason, opt_n, opt_m, subscribed, failed, closed_after_sub, (unsigned long long)opt_n * opt_m,
             (unsigned long long)expected_total, (unsigned long long)bad_frames, cmin, cmax, zero, (long long)go_t,
             (long long)pubdone_t, (long long)now_ns(), user, sys, rss_mb());
  emit(line);
}

/* ---- stdin commands ---- */
static char cmdbuf[4096];
static size_t cmdlen;

static void on_stdin(void) {
  ssize_t k = read(0, cmdbuf + cmdlen, sizeof cmdbuf - 1 - cmdlen);
  if (k <= 0) exit(0);
  cmdlen += (size_t)k;
  char *nl;
  while ((nl = memchr(cmdbuf, '\n', cmdlen))) {
    *nl = 0;
    char *line = cmdbuf;
    while (*line == ' ' || *line == '\r') line++;
    if (!strncmp(line, "go", 2)) {
      go = 1; go_t = now_ns(); getrusage(RUSAGE_SELF, &go_usage);
      if (expected_total > 0 && received >= expected_total) finish("complete");
    } else if (!strncmp(line, "pubdone", 7)) {
      pubdone = 1; pubdone_t = now_ns();
      if (opt_m == 0) finish("idle");
    } else if (!strncmp(line, "result", 6)) finish("requested");
    else if (!strncmp(line, "exit", 4)) exit(0);
    size_t used = (size_t)(nl + 1 - cmdbuf);
    memmove(cmdbuf, nl + 1, cmdlen - used);
    cmdlen -= used;
  }
}

static void read_urls(void) {
  if (!opt_url_file) { urls = malloc(sizeof *urls); urls[0] = (char *)opt_url; n_urls = 1; return; }
  FILE *f = fopen(opt_url_file, "r");
  if (!f) { perror(opt_url_file); exit(2); }
  size_t cap = 1024;
  urls = malloc(cap * sizeof *urls);
  char *line = NULL;
  size_t lcap = 0;
  ssize_t k;
  while ((k = getline(&line, &lcap, f)) > 0) {
    while (k && (line[k - 1] == '\n' || line[k - 1] == '\r')) line[--k] = 0;
    if (!k) continue;
    if ((size_t)n_urls == cap) urls = realloc(urls, (cap *= 2) * sizeof *urls);
    urls[n_urls++] = strdup(line);
  }
  free(line);
  fclose(f);
  if (!n_urls) { fprintf(stderr, "%s: no URL\n", opt_url_file); exit(2); }
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--url")) opt_url = v;
    else if (!strcmp(k, "--url-file")) opt_url_file = v;
    else if (!strcmp(k, "--proto")) {
      if (!strcmp(v, "raw")) opt_proto = RAW;
      else if (!strcmp(v, "raw-welcome")) opt_proto = RAW_WELCOME;
      else if (!strcmp(v, "json-sub")) opt_proto = JSON_SUB;
      else { fprintf(stderr, "fastsub: proto %s is not spoken here\n", v); return 2; }
    } else if (!strcmp(k, "--n")) opt_n = atoi(v);
    else if (!strcmp(k, "--m")) opt_m = atoi(v);
    else if (!strcmp(k, "--epoch")) opt_epoch = atoll(v);
    else if (!strcmp(k, "--concurrency")) opt_conc = atoi(v);
    else if (!strcmp(k, "--drain-idle")) opt_drain_idle_ms = atof(v) * 1000;
    else if (!strcmp(k, "--drain-max")) opt_drain_max_ms = atof(v) * 1000;
    else if (!strcmp(k, "--hard-timeout")) opt_hard_ms = atof(v) * 1000;
    else if (!strcmp(k, "--sub-frame")) opt_sub_frame = v;
    else if (!strcmp(k, "--sub-ack")) opt_sub_ack = v;
    else if (!strcmp(k, "--per-event")) opt_per_event = atoi(v);
    else if (!strcmp(k, "--room")) { /* the room is in the URLs */ }
    else { fprintf(stderr, "fastsub: unknown option %s\n", k); return 2; }
  }
  if (!opt_url && !opt_url_file) { fprintf(stderr, "fastsub: --url or --url-file\n"); return 2; }
  read_urls();
  if (opt_per_event && opt_m > 0) event_max_us = calloc((size_t)opt_m, sizeof *event_max_us);
  conns = calloc((size_t)opt_n, sizeof *conns);
  for (int i = 0; i < opt_n; i++) { conns[i].fd = -1; conns[i].last_seq = -1; }
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
  epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &sev);
  int64_t t_start = now_ns();
  start_more();
  int ready_sent = 0;
  static struct epoll_event evs[1024];
  for (;;) {
    if (done_connecting && !ready_sent) {
      ready_sent = 1;
      char line[512];
      snprintf(line, sizeof line,
               "{\"event\":\"ready\",\"subscribed\":%d,\"failed\":%d,\"retries\":%d,\"errors\":%d,"
               "\"connect_s\":%.3f,\"mem_rss_mb\":%.1f}",
               subscribed, failed, retries, errors_seen, (now_ns() - t_start) / 1e9, rss_mb());
      emit(line);
    }
    int timeout = pubdone && !finished ? 50 : 1000;
    int k = epoll_wait(epfd, evs, 1024, timeout);
    for (int e = 0; e < k; e++) {
      uint32_t i = evs[e].data.u32;
      if (i == UINT32_MAX) { on_stdin(); continue; }
      struct conn *c = &conns[i];
      if (c->fd < 0) continue;
      if (c->state == CONNECTING) on_connected((int)i);
      else on_readable((int)i);
    }
    int64_t t = now_ns();
    if ((t - t_start) / 1e6 > opt_hard_ms) finish("hard-timeout");
    if (pubdone && !finished) {
      int64_t since = last_recv > pubdone_t ? last_recv : pubdone_t;
      if ((t - since) / 1e6 > opt_drain_idle_ms) finish("drain-idle");
      else if ((t - pubdone_t) / 1e6 > opt_drain_max_ms) finish("drain-max");
    }
  }
}
