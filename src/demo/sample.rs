//! The demo's sample data: Vietnamese retail customers, generated from a fixed seed so
//! every run (and the printed search example) is the same.
//!
//! Pure: no I/O. It owns nothing secret; the values only look real.

use std::collections::HashSet;

/// One customer, in the application's (plaintext) view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i32,
    pub full_name: String,
    pub phone: String,
    pub email: String,
    pub national_id: String,
    pub birth_date: String,
    pub address: String,
    pub province: &'static str,
    pub loyalty_tier: &'static str,
}

impl Customer {
    /// One line of `COPY customers (COPY_COLUMNS) FROM STDIN` text format. No generated
    /// value holds a tab, newline or backslash, so nothing needs escaping.
    pub fn copy_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.id,
            self.full_name,
            self.phone,
            self.email,
            self.national_id,
            self.birth_date,
            self.address,
            self.province,
            self.loyalty_tier
        )
    }
}

/// The column list matching [`Customer::copy_line`].
pub const COPY_COLUMNS: &str =
    "id, full_name, phone, email, national_id, birth_date, address, province, loyalty_tier";

/// (with diacritics, ASCII for e-mail addresses)
const FAMILY: &[(&str, &str)] = &[
    ("Nguyễn", "nguyen"),
    ("Trần", "tran"),
    ("Lê", "le"),
    ("Phạm", "pham"),
    ("Hoàng", "hoang"),
    ("Huỳnh", "huynh"),
    ("Phan", "phan"),
    ("Vũ", "vu"),
    ("Võ", "vo"),
    ("Đặng", "dang"),
    ("Bùi", "bui"),
    ("Đỗ", "do"),
    ("Hồ", "ho"),
    ("Ngô", "ngo"),
    ("Dương", "duong"),
    ("Lý", "ly"),
];
const MIDDLE: &[&str] = &[
    "Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quang", "Thu", "Hoài", "Gia", "Bảo",
];
const GIVEN: &[(&str, &str)] = &[
    ("An", "an"),
    ("Bình", "binh"),
    ("Chi", "chi"),
    ("Dũng", "dung"),
    ("Giang", "giang"),
    ("Hà", "ha"),
    ("Hải", "hai"),
    ("Hằng", "hang"),
    ("Hiếu", "hieu"),
    ("Hoa", "hoa"),
    ("Hùng", "hung"),
    ("Hương", "huong"),
    ("Khánh", "khanh"),
    ("Lan", "lan"),
    ("Linh", "linh"),
    ("Long", "long"),
    ("Mai", "mai"),
    ("Nam", "nam"),
    ("Nga", "nga"),
    ("Phương", "phuong"),
    ("Quân", "quan"),
    ("Sơn", "son"),
    ("Tâm", "tam"),
    ("Thảo", "thao"),
    ("Trang", "trang"),
    ("Tuấn", "tuan"),
    ("Vy", "vy"),
    ("Yến", "yen"),
];
/// Mobile prefixes in use (Viettel 03x/086/09x, Vietnamobile 05x, MobiFone 07x/089/09x,
/// VinaPhone 08x/09x).
const PREFIXES: &[&str] = &[
    "032", "033", "034", "035", "036", "037", "038", "039", "056", "058", "059", "070", "076",
    "077", "078", "079", "081", "082", "083", "084", "085", "086", "088", "089", "090", "091",
    "093", "094", "096", "097", "098", "099",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com.vn",
    "outlook.com",
    "icloud.com",
    "fpt.vn",
];
/// (province, CCCD province code, a district in it)
const PLACES: &[(&str, &str, &str)] = &[
    ("TP. Hồ Chí Minh", "079", "Quận 1"),
    ("TP. Hồ Chí Minh", "079", "Quận Bình Thạnh"),
    ("TP. Hồ Chí Minh", "079", "TP. Thủ Đức"),
    ("Hà Nội", "001", "Quận Hoàn Kiếm"),
    ("Hà Nội", "001", "Quận Cầu Giấy"),
    ("Đà Nẵng", "048", "Quận Hải Châu"),
    ("Hải Phòng", "031", "Quận Lê Chân"),
    ("Cần Thơ", "092", "Quận Ninh Kiều"),
    ("Khánh Hòa", "056", "TP. Nha Trang"),
    ("Thừa Thiên Huế", "046", "TP. Huế"),
];
const STREETS: &[&str] = &[
    "Lê Lợi",
    "Nguyễn Huệ",
    "Trần Hưng Đạo",
    "Hai Bà Trưng",
    "Lý Thường Kiệt",
    "Điện Biên Phủ",
    "Cách Mạng Tháng Tám",
    "Võ Văn Tần",
    "Phan Đình Phùng",
    "Nguyễn Trãi",
];
/// Weighted: most customers are in the lowest tier.
const TIERS: &[&str] = &[
    "bronze", "bronze", "bronze", "bronze", "silver", "silver", "silver", "gold", "gold",
    "platinum",
];

/// splitmix64: tiny, seedable, good enough for sample data (not for anything secret).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.below(10) as u8)))
            .collect()
    }
}

/// `count` customers with ids 1..=count, unique phones, e-mails and national ids.
pub fn customers(count: usize, seed: u64) -> Vec<Customer> {
    let mut rng = Rng(seed);
    let mut phones = HashSet::with_capacity(count);
    let mut ids = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    for i in 1..=count {
        let (family, family_ascii) = rng.pick(FAMILY).copied().unwrap_or(("Nguyễn", "nguyen"));
        let middle = rng.pick(MIDDLE).copied().unwrap_or("Văn");
        let (given, given_ascii) = rng.pick(GIVEN).copied().unwrap_or(("An", "an"));
        let phone = loop {
            let p = format!(
                "{}{}",
                rng.pick(PREFIXES).copied().unwrap_or("090"),
                rng.digits(7)
            );
            if phones.insert(p.clone()) {
                break p;
            }
        };
        let year = 1960 + rng.below(46);
        let month = 1 + rng.below(12);
        let day = 1 + rng.below(28);
        let female = middle == "Thị" || rng.below(2) == 1;
        let (province, code, district) =
            rng.pick(PLACES)
                .copied()
                .unwrap_or(("Hà Nội", "001", "Quận Hoàn Kiếm"));
        // CCCD: province code, century+sex digit, two-digit birth year, six digits.
        let century_sex = match (year >= 2000, female) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        let national_id = loop {
            let n = format!("{code}{century_sex}{:02}{}", year % 100, rng.digits(6));
            if ids.insert(n.clone()) {
                break n;
            }
        };
        let email = format!(
            "{given_ascii}.{family_ascii}{i}@{}",
            rng.pick(DOMAINS).copied().unwrap_or("gmail.com")
        );
        let address = format!(
            "{} {}, Phường {}, {district}, {province}",
            1 + rng.below(300),
            rng.pick(STREETS).copied().unwrap_or("Lê Lợi"),
            1 + rng.below(15)
        );
        out.push(Customer {
            id: i as i32,
            full_name: format!("{family} {middle} {given}"),
            phone,
            email,
            national_id,
            birth_date: format!("{year:04}-{month:02}-{day:02}"),
            address,
            province,
            loyalty_tier: rng.pick(TIERS).copied().unwrap_or("bronze"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_are_realistic_unique_and_reproducible() {
        let a = customers(2000, 7);
        assert_eq!(a, customers(2000, 7));
        let phones: HashSet<_> = a.iter().map(|c| &c.phone).collect();
        let ids: HashSet<_> = a.iter().map(|c| &c.national_id).collect();
        assert_eq!(phones.len(), 2000);
        assert_eq!(ids.len(), 2000);
        for c in &a {
            assert_eq!(c.phone.len(), 10);
            assert!(
                ["03", "05", "07", "08", "09"].contains(&&c.phone[..2]),
                "{}",
                c.phone
            );
            assert_eq!(c.national_id.len(), 12);
            assert!(c.national_id.bytes().all(|b| b.is_ascii_digit()));
            assert!(c.email.is_ascii() && c.email.contains('@'));
            assert_eq!(c.copy_line().matches('\t').count(), 8);
            assert!(!c.copy_line().contains('\\'));
        }
        assert!(
            a.iter().any(|c| !c.full_name.is_ascii()),
            "names carry diacritics"
        );
    }
}
