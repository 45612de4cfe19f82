// See Arduino.h: the fake board under rover.ino for host tests.
#include "Arduino.h"

#include <string>

#ifndef SHIM_LOOPS
#define SHIM_LOOPS 300
#endif

ShimSerial Serial;
static std::string g_input;
static size_t g_pos = 0;
static unsigned long g_now = 0;
static int g_pwm[32];
static bool g_pwm_set[32];

void pinMode(uint8_t, uint8_t) {}
void digitalWrite(uint8_t, uint8_t) {}
void analogWrite(uint8_t pin, int value) {
  if (pin < 32 && (!g_pwm_set[pin] || g_pwm[pin] != value)) {
    g_pwm[pin] = value;
    g_pwm_set[pin] = true;
    fprintf(stderr, "PIN %u %d at %lu\n", static_cast<unsigned>(pin), value, g_now);
  }
}
int analogRead(uint8_t) { return 900; }   // 8.80 V on the divider input: clamps to 100 %
unsigned long millis() { return g_now; }
void ShimSerial::begin(unsigned long) {}
// Only what has "arrived" by now: one byte per ms of simulated time, like a slow line.
int ShimSerial::available() {
  size_t arrived = g_now < g_input.size() ? g_now : g_input.size();
  return arrived > g_pos ? static_cast<int>(arrived - g_pos) : 0;
}
int ShimSerial::read() { return g_pos < g_input.size() ? static_cast<unsigned char>(g_input[g_pos++]) : -1; }

void setup();
void loop();

int main() {
  int c;
  while ((c = getchar()) != EOF) g_input.push_back(static_cast<char>(c));
  setup();
  for (int i = 0; i < SHIM_LOOPS; ++i) {
    loop();
    g_now += 10;
  }
  return 0;
}
