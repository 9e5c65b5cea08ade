//! What the TPM says about itself (TPM2_GetCapability) and its random number generator.

use tss_esapi::constants::PropertyTag;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::error::{classify, Stage};
use crate::backend::BackendError;
use crate::secret::SecretBytes;

/// The most random bytes one [`random`] request may ask for; more is a caller bug.
pub const MAX_RANDOM: usize = 64 * 1024;
/// Bytes asked of TPM2_GetRandom per command (the SHA-256 digest size, which every TPM allows).
const RANDOM_CHUNK: usize = 32;

/// Identity of the TPM, from its fixed properties.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TpmInfo {
    /// The 4-character vendor id (`TPM_PT_MANUFACTURER`), e.g. `IBM` for swtpm, `INTC`, `IFX`.
    pub manufacturer: String,
    /// The vendor strings (`TPM_PT_VENDOR_STRING_1..4`) joined, NULs and padding trimmed.
    pub vendor: String,
    /// `TPM_PT_FIRMWARE_VERSION_1` ‖ `_2` as one 64-bit number.
    pub firmware_version: u64,
    /// The firmware version as four 16-bit parts, `a.b.c.d`.
    pub firmware_version_text: String,
    /// The TPM library specification revision, e.g. `1.59` (`TPM_PT_REVISION` / 100).
    pub spec_revision: String,
    /// The specification level (`TPM_PT_LEVEL`).
    pub spec_level: u32,
    /// The specification year (`TPM_PT_YEAR`).
    pub spec_year: u32,
}

fn property(ctx: &mut Context, tag: PropertyTag) -> Result<u32, BackendError> {
    ctx.get_tpm_property(tag)
        .map_err(|e| classify(e, Stage::Other))
        .map(|v| v.unwrap_or(0))
}

/// Four big-endian bytes as text, NULs and spaces trimmed.
fn ascii(value: u32) -> String {
    value
        .to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect::<String>()
}

/// Reads the identity properties.
///
/// # Errors
/// Classified TSS errors.
pub fn info(ctx: &mut Context) -> Result<TpmInfo, BackendError> {
    let manufacturer = ascii(property(ctx, PropertyTag::Manufacturer)?)
        .trim()
        .to_owned();
    let mut vendor = String::new();
    for tag in [
        PropertyTag::VendorString1,
        PropertyTag::VendorString2,
        PropertyTag::VendorString3,
        PropertyTag::VendorString4,
    ] {
        vendor.push_str(&ascii(property(ctx, tag)?));
    }
    let fw1 = property(ctx, PropertyTag::FirmwareVersion1)?;
    let fw2 = property(ctx, PropertyTag::FirmwareVersion2)?;
    let revision = property(ctx, PropertyTag::Revision)?;
    Ok(TpmInfo {
        manufacturer,
        vendor: vendor.trim().to_owned(),
        firmware_version: (u64::from(fw1) << 32) | u64::from(fw2),
        firmware_version_text: format!(
            "{}.{}.{}.{}",
            fw1 >> 16,
            fw1 & 0xffff,
            fw2 >> 16,
            fw2 & 0xffff
        ),
        spec_revision: format!("{}.{:02}", revision / 100, revision % 100),
        spec_level: property(ctx, PropertyTag::Level)?,
        spec_year: property(ctx, PropertyTag::Year)?,
    })
}

/// `n` bytes from TPM2_GetRandom, asked for in chunks (the TPM may return fewer than asked).
///
/// # Errors
/// `Invariant` when `n` exceeds [`MAX_RANDOM`] or the TPM keeps returning nothing; classified
/// TSS errors otherwise.
pub fn random(ctx: &mut Context, n: usize) -> Result<SecretBytes, BackendError> {
    if n > MAX_RANDOM {
        return Err(BackendError::Invariant("random request above MAX_RANDOM"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(n));
    let mut empty_replies = 0u8;
    while out.len() < n {
        let want = (n - out.len()).min(RANDOM_CHUNK);
        let got = ctx
            .execute_without_session(|ctx| ctx.get_random(want))
            .map_err(|e| classify(e, Stage::Other))?;
        if got.value().is_empty() {
            empty_replies += 1;
            if empty_replies > 3 {
                return Err(BackendError::Invariant("TPM2_GetRandom returned no bytes"));
            }
        }
        let take = got.value().len().min(n - out.len());
        out.extend_from_slice(&got.value()[..take]);
    }
    Ok(SecretBytes::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_ids_read_as_text() {
        assert_eq!(ascii(0x4942_4D00), "IBM");
        assert_eq!(ascii(0x494E_5443), "INTC");
    }
}
