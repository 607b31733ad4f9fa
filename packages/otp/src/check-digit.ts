// Luhn (ISO/IEC 7812-1) check digit over the digits of a serial number: it catches
// every single-digit typo and most swaps of neighbours when a serial is read aloud
// or typed from a token's back.

export function luhnCheckDigit(digits: string): number {
  let sum = 0;
  let double = true;
  for (let i = digits.length - 1; i >= 0; i--) {
    let value = digits.charCodeAt(i) - 48;
    if (value < 0 || value > 9) throw new RangeError(`not a digit: ${digits[i]}`);
    if (double) {
      value *= 2;
      if (value > 9) value -= 9;
    }
    sum += value;
    double = !double;
  }
  return (10 - (sum % 10)) % 10;
}

/** True when the last digit is the Luhn check digit of the ones before it. */
export function hasValidLuhnCheckDigit(digitsWithCheck: string): boolean {
  if (!/^\d{2,}$/.test(digitsWithCheck)) return false;
  const body = digitsWithCheck.slice(0, -1);
  return luhnCheckDigit(body) === Number(digitsWithCheck.at(-1));
}
