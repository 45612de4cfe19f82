// Just enough of the Arduino core to compile rover.ino on a PC and run it against a fake clock.
// Used only by tests/test_firmware.py: g++ -include Arduino.h -x c++ rover.ino ... shim_main.cpp
//   Serial input  = all of stdin, read at start;  Serial output -> stdout;
//   pin changes   -> stderr as "PIN <pin> <value>" (analogWrite) when the value changes;
//   millis()      advances 10 ms per loop() pass; main runs loop() SHIM_LOOPS times (default 300).
#ifndef SHIM_ARDUINO_H
#define SHIM_ARDUINO_H
#include <stdint.h>
#include <stdio.h>

#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define A0 14

void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
void analogWrite(uint8_t pin, int value);
int analogRead(uint8_t pin);
unsigned long millis();

class ShimSerial {
 public:
  void begin(unsigned long baud);
  int available();
  int read();
  void print(const char* s) { fputs(s, stdout); }
  void print(char c) { fputc(c, stdout); }
};
extern ShimSerial Serial;
#endif
