"""CRC-16 variants used by FLIR serial protocols (poly 0x1021, MSB-first, no xorout).

Both are ``binascii.crc_hqx`` with a different initial value (thermal_io.md §1.4, §2):

- Boson FSLP: init 0x1D0F (CRC-16/AUG-CCITT, a.k.a. SPI-FUJITSU); check("123456789") = 0xE5CC.
  FLIR SDK ``flirCRC.h``: ``FLIR_CRC_INITIAL_VALUE (0x1D0F)``.
- Tau2: init 0x0000 (CRC-16/XMODEM); check("123456789") = 0x31C3.
"""
from __future__ import annotations

import binascii

BOSON_CRC_INIT = 0x1D0F
TAU_CRC_INIT = 0x0000


def crc16_boson(data: bytes) -> int:
    """CRC-16 poly 0x1021 init 0x1D0F over ``data`` (Boson FSLP frames; CRC-16/AUG-CCITT).

    Source: FLIR SDK ``flirCRC.h`` ``FLIR_CRC_INITIAL_VALUE (0x1D0F)``, thermal_io.md §1.4;
    check value over b"123456789" is 0xE5CC.

    Returns:
        The CRC as an int in 0..0xFFFF.
    """
    return binascii.crc_hqx(bytes(data), BOSON_CRC_INIT)


def crc16_xmodem(data: bytes) -> int:
    """CRC-16 poly 0x1021 init 0x0000 over ``data`` (Tau2 packets; CRC-16/XMODEM).

    Source: flirpy ``tau.py``, thermal_io.md §2; check value over b"123456789" is 0x31C3.

    Returns:
        The CRC as an int in 0..0xFFFF.
    """
    return binascii.crc_hqx(bytes(data), TAU_CRC_INIT)
