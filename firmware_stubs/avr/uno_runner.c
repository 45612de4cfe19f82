/* Runs an Arduino Uno firmware (ATmega328P ELF) on simavr, paced to the wall clock, with UART0 on a
 * pseudo-terminal and the motor pins logged. Written for signal-bridge's hardware-in-the-loop tests.
 *
 *   uno_runner FIRMWARE.elf [--a0-mv MILLIVOLTS] [--log FILE]
 *
 * stdout: "PORT /dev/pts/N" once UART0 is attached (give that path to the bridge), then one line per
 * change of a watched pin (and to --log FILE too, when given):
 *
 *   PIN <arduino pin> <value> <sim_us> <wall_us>
 *   SLIP <lag_us> <sim_us> <wall_us>          (the emulator fell behind the wall clock: see below)
 *
 * value is the PWM duty 0-255 for the PWM pins 5 and 6 (OCR0B / OCR0A while the timer drives the pin,
 * else 0 or 255 from the port bit) and 0/1 for the direction pins 7, 8, 9, 10. sim_us is the MCU's
 * time since reset; wall_us is CLOCK_MONOTONIC in microseconds (time.monotonic() * 1e6 in Python), so
 * a test can relate a pin change to when it wrote a command.
 *
 * Facts this relies on (simavr 1.6): the core runs ~4x faster than real time unless paced, which would
 * make every firmware timeout fire early: the loop sleeps whenever simulated time gets ahead of the
 * wall clock. When the host starves the emulator (a loaded machine) and it falls more than 20 ms behind,
 * the pacing origin slips instead of the MCU racing to catch up: a catch-up would squeeze the firmware's
 * time (a 1 s timeout over in 0.4 s of wall time); a slip only makes it later, as a slow clock would.
 * Each slip is logged ("SLIP <lag_us> <sim_us> <wall_us>") so that a test can tell a late timeout
 * from a starved emulator; the total goes to stderr at exit. uart_pty_stop() can hang, so SIGTERM and
 * SIGINT end the process with _exit(); it also ends when its parent dies (PR_SET_PDEATHSIG). The ADC
 * reads 0 unless a voltage is raised on its input: A0 gets --a0-mv (default 4000 mV) against
 * AVCC = AREF = 5 V.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "avr_adc.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "uart_pty.h"

#define F_CPU 16000000UL
#define CHECK_EVERY 800           /* cycles between pin checks: 50 us of MCU time */
#define PACE_SLACK_US 300         /* sleep only when the MCU is this far ahead of the wall clock */
#define MAX_LAG_US 20000          /* further behind than this (the host starved us): slip, never sprint */

/* ATmega328P data-space addresses of the registers the motor pins depend on. */
#define REG_PORTB 0x25
#define REG_PORTD 0x2B
#define REG_TCCR0A 0x44
#define REG_OCR0A 0x47
#define REG_OCR0B 0x48

static volatile sig_atomic_t stop_requested = 0;
static FILE *log_file = NULL;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static uint64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Duty 0-255 of a Timer0 PWM pin: the compare register while COM0x1 connects it, else the port bit. */
static int pwm_duty(const avr_t *avr, int com_bit, int ocr, int port_bit) {
  if (avr->data[REG_TCCR0A] & (1 << com_bit)) return avr->data[ocr];
  return (avr->data[REG_PORTD] & (1 << port_bit)) ? 255 : 0;
}

struct watched {
  int pin;
  int last;
};

static void emit(const char *what, long long a, long long b, uint64_t sim_us, uint64_t now_us) {
  char line[96];
  if (a < 0) {
    snprintf(line, sizeof line, "%s %lld %llu %llu\n", what, b, (unsigned long long)sim_us,
             (unsigned long long)now_us);
  } else {
    snprintf(line, sizeof line, "%s %lld %lld %llu %llu\n", what, a, b, (unsigned long long)sim_us,
             (unsigned long long)now_us);
  }
  fputs(line, stdout);
  fflush(stdout);
  if (log_file != NULL) {
    fputs(line, log_file);
    fflush(log_file);
  }
}

static void check_pins(const avr_t *avr, struct watched *w, size_t n) {
  int values[6];
  values[0] = pwm_duty(avr, 5, REG_OCR0B, 5);               /* pin 5 = PD5 = OC0B */
  values[1] = pwm_duty(avr, 7, REG_OCR0A, 6);               /* pin 6 = PD6 = OC0A */
  values[2] = (avr->data[REG_PORTD] >> 7) & 1;              /* pin 7 = PD7 */
  values[3] = (avr->data[REG_PORTB] >> 0) & 1;              /* pin 8 = PB0 */
  values[4] = (avr->data[REG_PORTB] >> 1) & 1;              /* pin 9 = PB1 */
  values[5] = (avr->data[REG_PORTB] >> 2) & 1;              /* pin 10 = PB2 */
  uint64_t sim_us = avr->cycle / (F_CPU / 1000000u);
  uint64_t now = 0;
  for (size_t i = 0; i < n; ++i) {
    if (values[i] != w[i].last) {
      if (now == 0) now = wall_us();
      w[i].last = values[i];
      emit("PIN", w[i].pin, values[i], sim_us, now);
    }
  }
}

int main(int argc, char **argv) {
  const char *elf = NULL;
  long a0_mv = 4000;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--a0-mv") == 0 && i + 1 < argc) {
      char *end = NULL;
      a0_mv = strtol(argv[++i], &end, 10);
      if (*end != '\0' || a0_mv < 0 || a0_mv > 5000) {
        fprintf(stderr, "uno_runner: --a0-mv takes 0..5000\n");
        return 2;
      }
    } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
      log_file = fopen(argv[++i], "a");
      if (log_file == NULL) {
        fprintf(stderr, "uno_runner: cannot open %s: %s\n", argv[i], strerror(errno));
        return 2;
      }
    } else if (elf == NULL && argv[i][0] != '-') {
      elf = argv[i];
    } else {
      fprintf(stderr, "usage: uno_runner FIRMWARE.elf [--a0-mv MILLIVOLTS] [--log FILE]\n");
      return 2;
    }
  }
  if (elf == NULL) {
    fprintf(stderr, "usage: uno_runner FIRMWARE.elf [--a0-mv MILLIVOLTS] [--log FILE]\n");
    return 2;
  }

  /* Never outlive the test or bench that started us (a paced MCU costs a quarter of a core forever). */
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;      /* it died before the request took effect */

  elf_firmware_t fw;
  memset(&fw, 0, sizeof fw);
  if (elf_read_firmware(elf, &fw) != 0) {
    fprintf(stderr, "uno_runner: cannot read %s\n", elf);
    return 1;
  }
  avr_t *avr = avr_make_mcu_by_name("atmega328p");
  if (avr == NULL) {
    fprintf(stderr, "uno_runner: simavr has no atmega328p\n");
    return 1;
  }
  avr_init(avr);
  avr->frequency = F_CPU;
  avr->avcc = avr->vcc = avr->aref = 5000;      /* millivolts */
  avr_load_firmware(avr, &fw);
  avr->log = 1;                                 /* errors only */

  static uart_pty_t uart;
  uart_pty_init(avr, &uart);
  uart_pty_connect(&uart, '0');
  printf("PORT %s\n", uart.pty.slavename);
  fflush(stdout);

  avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0), (uint32_t)a0_mv);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct watched pins[6] = {{5, -1}, {6, -1}, {7, -1}, {8, -1}, {9, -1}, {10, -1}};
  uint64_t start = wall_us();
  uint64_t slips = 0, slipped_us = 0;
  avr_cycle_count_t next_check = 0;
  int state = cpu_Running;
  while (!stop_requested && state != cpu_Done && state != cpu_Crashed) {
    state = avr_run(avr);
    if (avr->cycle < next_check) continue;
    next_check = avr->cycle + CHECK_EVERY;
    check_pins(avr, pins, 6);
    /* Pace: never let the MCU's clock run ahead of the wall clock (by more than the slack). */
    uint64_t sim_us = avr->cycle / (F_CPU / 1000000u);
    uint64_t real_us = wall_us() - start;
    if (sim_us > real_us + PACE_SLACK_US) {
      struct timespec ts = {0, (long)(sim_us - real_us) * 1000L};
      nanosleep(&ts, NULL);
    } else if (real_us > sim_us + MAX_LAG_US) {
      slips += 1;
      slipped_us += real_us - sim_us;
      emit("SLIP", -1, (long long)(real_us - sim_us), sim_us, start + real_us);
      start += real_us - sim_us;
    }
  }
  if (state == cpu_Crashed) fprintf(stderr, "uno_runner: the MCU crashed at cycle %llu\n",
                                    (unsigned long long)avr->cycle);
  fprintf(stderr, "uno_runner: %llu slip(s) behind the wall clock, %llu ms in all\n",
          (unsigned long long)slips, (unsigned long long)(slipped_us / 1000u));
  fflush(stdout);
  if (log_file != NULL) fflush(log_file);
  _exit(state == cpu_Crashed ? 1 : 0);   /* not uart_pty_stop(): it can hang in 1.6 */
}
