"""Reference implementations that frame tests compare the product against."""

from __future__ import annotations


def manual_crc16(packet: bytes) -> int:
    """The RoboClaw user manual's "CRC16 Checksum Calculation" C function, transcribed line by line:
    crc ^= byte << 8; eight times: crc = (crc << 1) ^ 0x1021 if bit 15 else crc << 1."""
    crc = 0
    for byte in packet:
        crc = crc ^ (byte << 8)
        for _bit in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF        # the C code's `unsigned int` keeps 16 bits on the AVR it was written for
    return crc
