"""ENCLS[EINIT]: the SIGSTRUCT and EINITTOKEN checks in the SDM's order, the launch key, the
commit into the SECS; and the pending-interrupt hook of EINIT's event window (step 4)."""

from __future__ import annotations

import hashlib
import hmac
import struct

from sgxlaunch.arch.constants import (
    CONTROLLED_ATTRIBUTES,
    HARDCODED_PKCS1_5_PADDING,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    VENDOR_INTEL,
    VENDOR_NONE,
    AttributeFlag,
    KeyName,
    PageType,
    SgxStatus,
)
from sgxlaunch.arch.structs import EinitToken, Sigstruct
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.keys import FusedSecrets, KeyDependencies, cmac128, derive_key
from sgxlaunch.cpu.msr import Msrs, cpusvn_beyond
from sgxlaunch.cpu.state import EpcState, StateView
from sgxlaunch.sigstruct import expected_em

PAGE = 4096
_PAGE_MASK = PAGE - 1


class EinitLeaf(StateView):
    """EINIT over the shared state, the launch-key MSRs and the fused secrets."""

    def __init__(self, state: EpcState, config: CpuConfig, msrs: Msrs, fuses: FusedSecrets) -> None:
        super().__init__(state)
        self.config = config
        self._msrs = msrs
        self._fuses = fuses
        self._interrupt_pending = False

    def pend_interrupt(self) -> None:
        """Make an unmasked interrupt pending; the next EINIT's event window (step 4) sees it
        and returns SGX_UNMASKED_EVENT (the interrupt is then delivered and cleared)."""
        self._interrupt_pending = True

    def launch_key(self, token: EinitToken) -> bytes:
        """TMP_EINITTOKENKEY (SDM EINIT; spec §4.3), under the *current* MSR value."""
        return derive_key(
            self._fuses.root_key,
            KeyDependencies(
                keyname=KeyName.EINITTOKEN,
                isvprodid=token.isvprodidle,
                isvsvn=token.isvsvnle,
                sgxownerepoch=self.config.owner_epoch,
                attributes_flags=token.maskedattributesle.flags,
                attributes_xfrm=token.maskedattributesle.xfrm,
                mrsigner=self._msrs.lepubkeyhash,
                keyid=token.keyid,
                seal_key_fuses=self._fuses.seal_fuses,
                cpusvn=token.cpusvnle,
                miscselect=token.maskedmiscselectle,
                padding=HARDCODED_PKCS1_5_PADDING,
                cet_attributes=token.cet_masked_attributes_le,
            ),
        )

    @staticmethod
    def _signature_em(sig: Sigstruct) -> bytes | None:
        """EM = S³ mod M through Q1 and Q2 as hardware computes it; None if Q1/Q2 inconsistent."""
        n = sig.modulus_int
        s = sig.signature_int
        if n == 0:
            return None
        q1 = int.from_bytes(sig.q1, "little")
        q2 = int.from_bytes(sig.q2, "little")
        r1 = s * s - q1 * n
        if not 0 <= r1 < n:
            return None
        r2 = r1 * s - q2 * n
        if not 0 <= r2 < n:
            return None
        return r2.to_bytes(384, "big")

    def einit(self, sigstruct: int, secs: int, einittoken: int) -> SgxStatus:
        """ENCLS[EINIT]: verify the SIGSTRUCT and EINITTOKEN and initialize the enclave.

        Args:
            sigstruct: address of the SIGSTRUCT (RBX, 4 KiB aligned, ordinary memory).
            secs: address of the SECS (RCX, 4 KiB aligned, EPC).
            einittoken: address of the EINITTOKEN (RDX, 512-byte aligned, ordinary memory).

        Steps, in the order of the SDM (December 2023) as collected in spec §4.2:

        1. RBX/RCX not 4 KiB aligned or RDX not 512-byte aligned → #GP; RCX outside the EPC →
           #PF(RCX). (step 1)
        2. Copy SIGSTRUCT (1808 B) and EINITTOKEN (304 B). (step 2)
        3. HEADER (all 16 bytes), VENDOR ∈ {0, 0x8086}, HEADER2, EXPONENT = 3, every reserved
           range zero (CET fields count as reserved: CET is not modelled) →
           SGX_INVALID_SIG_STRUCT. The SDK's typed header (bytes 12..15 ≠ 0) fails here.
           (step 3)
        4. Event window: an interrupt pending (:meth:`pend_interrupt`) → SGX_UNMASKED_EVENT;
           then EM = S³ mod M through Q1, Q2 (``S² − Q1·M`` and ``(S² − Q1·M)·S − Q2·M`` must lie
           in [0, M), else the quotients are inconsistent) compared with the PKCS#1 v1.5
           SHA-256 encoding of the signed bytes → SGX_INVALID_SIGNATURE; the top 352 bytes of
           EM are kept as TMP_SIG_PADDING. (step 4)
        5. EPCM(RCX) not a valid PT_SECS page → #PF(RCX). (step 5)
        6. ISVFAMILYID ≠ 0 and SECS.ATTRIBUTES.KSS = 0 → SGX_INVALID_SIG_STRUCT. (step 6)
        7. Enclave already initialized → #GP. (step 7)
        8. TMP_MRENCLAVE := SHA256FINAL(SECS.MRENCLAVE); ≠ ENCLAVEHASH →
           SGX_INVALID_MEASUREMENT. (step 8)
        9. TMP_MRSIGNER := SHA-256(MODULUS). (step 9)
        10. SECS.ATTRIBUTES.EINITTOKEN_KEY set and TMP_MRSIGNER ≠ IA32_SGXLEPUBKEYHASH →
            SGX_INVALID_ATTRIBUTE. (step 10)
        11. (SECS.ATTRIBUTES ∧ ATTRIBUTEMASK) ≠ (SIGSTRUCT.ATTRIBUTES ∧ ATTRIBUTEMASK), 128 bits
            → SGX_INVALID_ATTRIBUTE. (step 11; the 2018 "reserved mask bits set" rule is not
            enforced)
        12. (SECS.MISCSELECT ∧ MISCMASK) ≠ (SIGSTRUCT.MISCSELECT ∧ MISCMASK) →
            SGX_INVALID_ATTRIBUTE. (step 12)
        13. CET attribute check: skipped, the part has no CET (CPUID.(12H,1):EAX[6] = 0).
            (step 13)
        14. Token VALID bit 0 clear: TMP_MRSIGNER ≠ IA32_SGXLEPUBKEYHASH →
            SGX_INVALID_EINITTOKEN, else go to commit. (step 14)
        15. Token MASKEDATTRIBUTESLE.DEBUG set and SECS.ATTRIBUTES.DEBUG clear →
            SGX_INVALID_EINITTOKEN. (step 15)
        16. Token reserved ranges, VALID bits 31:1 or — on this part without CET — the CET
            masked attributes (byte 212) not zero → SGX_INVALID_EINITTOKEN. (step 16)
        17. Token CPUSVNLE beyond CR_CPUSVN → SGX_INVALID_CPUSVN. (step 17)
        18. Launch key derived under the current IA32_SGXLEPUBKEYHASH; token MAC ≠
            CMAC(key, token[0:192]) → SGX_INVALID_EINITTOKEN. (step 18)
        19. Token MRENCLAVE ≠ TMP_MRENCLAVE or MRSIGNER ≠ TMP_MRSIGNER →
            SGX_INVALID_MEASUREMENT. (step 19)
        20. Token ATTRIBUTES ≠ SECS.ATTRIBUTES → SGX_INVALID_ATTRIBUTE. (step 20)
        21. Commit: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, ISVFAMILYID, ISVEXTPRODID, PADDING
            into the SECS; ATTRIBUTES.INIT set. (step 21)

        Returns:
            The status code; SGX_SUCCESS after the commit.

        Raises:
            GeneralProtection: steps 1 and 7.
            PageFault: steps 1 and 5.
        """
        # Step 1.
        if sigstruct & _PAGE_MASK or secs & _PAGE_MASK or einittoken & 511:
            raise GeneralProtection("EINIT operand misaligned")
        if not self.epc_base <= secs < self._epc_end:
            raise PageFault("EINIT SECS operand is not in the EPC", address=secs)
        # Step 2.
        sig = Sigstruct.from_bytes_raw(self.state.read(sigstruct, Sigstruct.SIZE))
        token = EinitToken.from_bytes_raw(self.state.read(einittoken, EinitToken.SIZE))
        # Step 3.
        if (
            sig.header != SIGSTRUCT_HEADER
            or sig.vendor not in (VENDOR_NONE, VENDOR_INTEL)
            or sig.header2 != SIGSTRUCT_HEADER2
            or sig.exponent != SIGSTRUCT_EXPONENT
            or sig.nonzero_reserved() is not None
            or sig.cet_attributes
            or sig.cet_attributes_mask
        ):
            return SgxStatus.INVALID_SIG_STRUCT
        # Step 4.
        if self._interrupt_pending:
            self._interrupt_pending = False
            return SgxStatus.UNMASKED_EVENT
        em = self._signature_em(sig)
        if em is None or not hmac.compare_digest(em, expected_em(sig.signed_bytes())):
            return SgxStatus.INVALID_SIGNATURE
        sig_padding = em[:352]
        # Step 5.
        i = (secs - self.epc_base) >> 12
        if not self._valid[i] or self._ptype[i] != PageType.SECS:
            raise PageFault("EINIT SECS operand is not a valid SECS page", address=secs)
        enclave = self._secs_state[i]
        # Step 6.
        if any(sig.isvfamilyid) and not enclave.attributes & AttributeFlag.KSS:
            return SgxStatus.INVALID_SIG_STRUCT
        # Step 7.
        if enclave.initialized:
            raise GeneralProtection("EINIT on an initialized enclave")
        # Step 8.
        enclave.flush()
        mrenclave = enclave.measurement.copy().digest()
        if not hmac.compare_digest(mrenclave, sig.enclavehash):
            return SgxStatus.INVALID_MEASUREMENT
        # Step 9.
        mrsigner = hashlib.sha256(sig.modulus).digest()
        lehash = self._msrs.lepubkeyhash
        # Step 10.
        if enclave.attributes & CONTROLLED_ATTRIBUTES and not hmac.compare_digest(mrsigner, lehash):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 11.
        mask = sig.attributemask
        if (enclave.attributes & mask.flags) != (sig.attributes.flags & mask.flags) or (
            enclave.xfrm & mask.xfrm
        ) != (sig.attributes.xfrm & mask.xfrm):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 12.
        if (enclave.miscselect & sig.miscmask) != (sig.miscselect & sig.miscmask):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 13: no CET on this part.
        if token.valid & 1:
            # Step 15.
            if token.maskedattributesle.flags & AttributeFlag.DEBUG and not (
                enclave.attributes & AttributeFlag.DEBUG
            ):
                return SgxStatus.INVALID_EINITTOKEN
            # Step 16.
            # Byte 212 (CET masked attributes) is reserved on a part without CET.
            if (
                token.valid != 1
                or token.nonzero_reserved() is not None
                or token.cet_masked_attributes_le
            ):
                return SgxStatus.INVALID_EINITTOKEN
            # Step 17.
            if cpusvn_beyond(token.cpusvnle, self.config.cpusvn):
                return SgxStatus.INVALID_CPUSVN
            # Step 18.
            key = self.launch_key(token)
            if not hmac.compare_digest(token.mac, cmac128(key, token.maced_bytes())):
                return SgxStatus.INVALID_EINITTOKEN
            # Step 19.
            if not hmac.compare_digest(token.mrenclave, mrenclave) or not hmac.compare_digest(
                token.mrsigner, mrsigner
            ):
                return SgxStatus.INVALID_MEASUREMENT
            # Step 20.
            if token.attributes.flags != enclave.attributes or token.attributes.xfrm != (
                enclave.xfrm
            ):
                return SgxStatus.INVALID_ATTRIBUTE
        # Step 14.
        elif not hmac.compare_digest(mrsigner, lehash):
            return SgxStatus.INVALID_EINITTOKEN
        # Step 21: commit.
        enclave.mrenclave = mrenclave
        enclave.mrsigner = mrsigner
        enclave.isvprodid = sig.isvprodid
        enclave.isvsvn = sig.isvsvn
        enclave.isvfamilyid = sig.isvfamilyid
        enclave.isvextprodid = sig.isvextprodid
        enclave.padding = sig_padding
        enclave.attributes = int(enclave.attributes | AttributeFlag.INIT)  # a plain int
        enclave.initialized = True
        base = i * PAGE
        self._epc[base + 48 : base + 56] = enclave.attributes.to_bytes(8, "little")
        self._epc[base + 64 : base + 96] = mrenclave
        self._epc[base + 128 : base + 160] = mrsigner
        self._epc[base + 256 : base + 260] = struct.pack("<HH", sig.isvprodid, sig.isvsvn)
        return SgxStatus.SUCCESS
