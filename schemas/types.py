"""Column types and value sets shared by every schema."""

import polars as pl

# Money and quantities are exact decimals end to end. Scale 18 holds every provider's precision
# (10-12 places are common, some quantities carry 15) and leaves 20 integer digits for sums.
MONEY = pl.Decimal(38, 18)
QUANTITY = pl.Decimal(38, 18)
TIMESTAMP = pl.Datetime("us", "UTC")

CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CHARGE_CLASSES = ("Correction",)
MATCH_STATUSES = ("matched", "billing_only", "telemetry_only")
# Provenance of a request's cost (issue 16): its own x_RequestId rows, a share of aggregated AI
# bill rows, or (reserved for telemetry estimates) a gateway's figure or a list-price estimate.
COST_SOURCES = ("invoice_request", "invoice_allocated", "gateway_reported", "list_estimate")
# Token types of AI usage (issue 16): uncached input, output (reasoning included), cache reads and
# writes; request_costs' EffectiveCost split by them (TYPED_COSTS, same order).
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
TYPED_COSTS = tuple(f"{t}_cost" for t in TOKEN_TYPES)
OUTCOMES = ("success", "failure", "unlabeled")
CALL_STATUSES = ("ok", "error")
OUTCOME_SIGNALS = ("explicit", "implicit")

# ISO 4217 active alphabetic codes (list one, as of 2025), plus the fund and precious-metal codes
# that appear in real billing systems.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD
    JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XCD
    XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG
    """.split()
)
