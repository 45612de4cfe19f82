// Rover line protocol: see rover_protocol.h and ../README.md.
#include "rover_protocol.h"

namespace rover {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Splits line in place at runs of spaces; returns the number of tokens (at most max).
size_t tokenize(char* line, const char** tokens, size_t max) {
  size_t n = 0;
  char* p = line;
  while (*p != '\0') {
    while (*p == ' ') *p++ = '\0';
    if (*p == '\0') break;
    if (n == max) return max + 1;       // too many: the caller reports "args"
    tokens[n++] = p;
    while (*p != '\0' && *p != ' ') ++p;
  }
  return n;
}

float clamp1(float v) { return v > 1 ? 1 : (v < -1 ? -1 : v); }

}  // namespace

bool parse_decimal(const char* s, float* out) {
  bool negative = false;
  if (*s == '+' || *s == '-') negative = (*s++ == '-');
  long whole = 0;
  int whole_digits = 0;
  while (is_digit(*s)) {
    if (++whole_digits > 6) return false;
    whole = whole * 10 + (*s++ - '0');
  }
  long frac = 0;
  long scale = 1;
  int frac_digits = 0;
  if (*s == '.') {
    ++s;
    while (is_digit(*s)) {
      if (++frac_digits > 6) return false;
      frac = frac * 10 + (*s++ - '0');
      scale *= 10;
    }
    if (frac_digits == 0) return false;   // "1." is not a number here
  }
  if (*s != '\0' || whole_digits + frac_digits == 0) return false;
  float v = static_cast<float>(whole) + static_cast<float>(frac) / static_cast<float>(scale);
  *out = negative ? -v : v;
  return true;
}

size_t format_telemetry(char* out, size_t n, int battery, float speed) {
  if (n < 16) return 0;
  if (battery < 0) battery = 0;
  if (battery > 100) battery = 100;
  if (!(speed < 9.99f)) speed = 9.99f;      // also catches NaN
  if (speed < -9.99f) speed = -9.99f;
  size_t i = 0;
  out[i++] = 'T';
  out[i++] = ' ';
  if (battery == 100) out[i++] = '1';
  if (battery >= 10) out[i++] = static_cast<char>('0' + (battery / 10) % 10);
  out[i++] = static_cast<char>('0' + battery % 10);
  out[i++] = ' ';
  long hundredths = static_cast<long>(speed * 100 + (speed < 0 ? -0.5f : 0.5f));
  if (hundredths < 0) {
    out[i++] = '-';
    hundredths = -hundredths;
  }
  out[i++] = static_cast<char>('0' + hundredths / 100);
  out[i++] = '.';
  out[i++] = static_cast<char>('0' + (hundredths / 10) % 10);
  out[i++] = static_cast<char>('0' + hundredths % 10);
  out[i] = '\0';
  return i;
}

Protocol::Protocol()
    : len_(0), overlong_(false), bad_char_(false), left_(0), right_(0), last_command_ms_(0),
      next_telemetry_ms_(0), telemetry_started_(false) {
  line_[0] = '\0';
}

const char* Protocol::feed(char c, uint32_t now_ms) {
  if (c == '\r') return nullptr;                    // accept CRLF senders
  if (c != '\n') {
    if (overlong_) return nullptr;                  // discarding until the terminator
    if (len_ == kMaxLine) {
      overlong_ = true;
      return nullptr;
    }
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) bad_char_ = true;     // remembered; the whole line is refused
    line_[len_++] = c;
    return nullptr;
  }
  line_[len_] = '\0';
  const char* reply;
  if (overlong_) {
    reply = "ERR too_long";
  } else if (bad_char_) {
    reply = "ERR bad_char";
  } else if (len_ == 0) {
    reply = nullptr;                                // blank line: ignored
  } else {
    reply = execute(now_ms);
  }
  len_ = 0;
  overlong_ = bad_char_ = false;
  return reply;
}

const char* Protocol::execute(uint32_t now_ms) {
  const char* tok[3];
  size_t n = tokenize(line_, tok, 3);
  if (n == 0) return "ERR unknown";                 // only spaces
  if (tok[0][1] != '\0') return "ERR unknown";
  switch (tok[0][0]) {
    case 'M': {
      if (n != 3) return "ERR args";
      float x, y;
      if (!parse_decimal(tok[1], &x) || !parse_decimal(tok[2], &y)) return "ERR number";
      if (x < -1 || x > 1 || y < -1 || y > 1) return "ERR range";
      // Arcade mix; scale both down together when a sum leaves [-1, 1] so the turn ratio is kept.
      float l = x + y, r = x - y;
      float big = l < 0 ? -l : l;
      float rr = r < 0 ? -r : r;
      if (rr > big) big = rr;
      if (big > 1) {
        l /= big;
        r /= big;
      }
      left_ = clamp1(l);
      right_ = clamp1(r);
      break;
    }
    case 'S':
      if (n != 1) return "ERR args";
      stop();
      break;
    case 'K':
      if (n != 1) return "ERR args";
      break;
    default:
      return "ERR unknown";
  }
  last_command_ms_ = now_ms;
  return "OK";
}

bool Protocol::tick(uint32_t now_ms) {
  // Unsigned subtraction: correct across the millis() wrap at 49.7 days.
  if (static_cast<uint32_t>(now_ms - last_command_ms_) < kWatchdogMs) return false;
  if (left_ == 0 && right_ == 0) return false;
  stop();
  return true;
}

bool Protocol::telemetry_due(uint32_t now_ms) {
  if (!telemetry_started_) {
    telemetry_started_ = true;
    next_telemetry_ms_ = now_ms + kTelemetryPeriodMs;
    return true;
  }
  if (static_cast<int32_t>(now_ms - next_telemetry_ms_) < 0) return false;
  next_telemetry_ms_ += kTelemetryPeriodMs;
  // After a long stall, do not burst: resynchronise to now.
  if (static_cast<int32_t>(now_ms - next_telemetry_ms_) >= 0) next_telemetry_ms_ = now_ms + kTelemetryPeriodMs;
  return true;
}

}  // namespace rover
