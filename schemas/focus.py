"""Staged FOCUS Cost and Usage rows: typed, validated, one row per landing row."""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.types import CHARGE_CATEGORIES, CHARGE_CLASSES, ISO_4217

_MONEY = pe.Decimal(38, 18)
_TS = pe.DateTime(time_unit="us", time_zone="UTC")


class StagedFocus(pa.DataFrameModel):
    """FOCUS 1.3 Cost and Usage rows as the pipeline reads them (FOCUS column names kept)."""

    source_file: str = pa.Field(description="Landing file the row came from, relative to landing/focus/.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line of the row in its file (CSV: header is line 1; Parquet: row number).")
    delivery: str = pa.Field(description="Delivery the file belongs to: its folder relative to landing/focus/.")
    BillingAccountId: str = pa.Field(description="FOCUS BillingAccountId.")
    BillingAccountName: str = pa.Field(nullable=True, description="FOCUS BillingAccountName.")
    BillingCurrency: str = pa.Field(isin=sorted(ISO_4217), description="FOCUS BillingCurrency, ISO 4217.")
    BillingPeriodStart: _TS = pa.Field(description="FOCUS BillingPeriodStart (inclusive), UTC.")
    BillingPeriodEnd: _TS = pa.Field(description="FOCUS BillingPeriodEnd (exclusive), UTC.")
    ChargePeriodStart: _TS = pa.Field(description="FOCUS ChargePeriodStart (inclusive), UTC.")
    ChargePeriodEnd: _TS = pa.Field(description="FOCUS ChargePeriodEnd (exclusive), UTC.")
    charge_date: pl.Date = pa.Field(description="UTC date of ChargePeriodStart.")
    ChargeCategory: str = pa.Field(isin=list(CHARGE_CATEGORIES), description="FOCUS ChargeCategory.")
    ChargeClass: str = pa.Field(nullable=True, isin=list(CHARGE_CLASSES), description="FOCUS ChargeClass: Correction or null.")
    ChargeDescription: str = pa.Field(nullable=True, description="FOCUS ChargeDescription.")
    BilledCost: _MONEY = pa.Field(description="FOCUS BilledCost, exact decimal, BillingCurrency.")
    EffectiveCost: _MONEY = pa.Field(description="FOCUS EffectiveCost (amortized), exact decimal, BillingCurrency.")
    ListCost: _MONEY = pa.Field(description="FOCUS ListCost, exact decimal, BillingCurrency.")
    ContractedCost: _MONEY = pa.Field(nullable=True, description="FOCUS ContractedCost, exact decimal, BillingCurrency.")
    ConsumedQuantity: _MONEY = pa.Field(nullable=True, description="FOCUS ConsumedQuantity, exact decimal.")
    ConsumedUnit: str = pa.Field(nullable=True, description="FOCUS ConsumedUnit.")
    InvoiceId: str = pa.Field(nullable=True, description="FOCUS InvoiceId.")
    InvoiceIssuerName: str = pa.Field(nullable=True, description="FOCUS InvoiceIssuerName.")
    ServiceProviderName: str = pa.Field(description="FOCUS ServiceProviderName (ProviderName in FOCUS 1.0-1.2).")
    ServiceName: str = pa.Field(nullable=True, description="FOCUS ServiceName.")
    SubAccountId: str = pa.Field(nullable=True, description="FOCUS SubAccountId: the project, workspace or subscription charged.")
    SubAccountName: str = pa.Field(nullable=True, description="FOCUS SubAccountName.")
    ResourceId: str = pa.Field(nullable=True, description="FOCUS ResourceId: the provider's id of the resource charged (e.g. a model endpoint).")
    ResourceName: str = pa.Field(nullable=True, description="FOCUS ResourceName.")
    SkuId: str = pa.Field(nullable=True, description="FOCUS SkuId.")
    SkuMeter: str = pa.Field(nullable=True, description="FOCUS SkuMeter: for tokens, the token type.")
    SkuPriceDetails: str = pa.Field(nullable=True, description="FOCUS SkuPriceDetails: JSON object of the SKU price's properties, as exported (text).")
    Tags: str = pa.Field(nullable=True, description="FOCUS Tags: JSON object of provider and user tags, as exported (text).")
    x_RequestId: str = pa.Field(nullable=True, description="Custom column: the LLM request the row bills, null for tax, fees, credits, purchases.")
    x_ModelVersion: str = pa.Field(nullable=True, description="Custom column: model version billed.")
    x_PromptVersion: str = pa.Field(nullable=True, description="Custom column: prompt version.")
    x_FeatureTag: str = pa.Field(nullable=True, description="Custom column: product feature.")
    x_SkuMeterName: str = pa.Field(nullable=True, description="Custom column (Azure): the meter's free-text name, where model, version and token direction are spelled (e.g. 'gpt 4o 0513 Input global Tokens').")
    x_UsageType: str = pa.Field(nullable=True, description="Custom column (AWS): the CUR usage type, with region, model and token direction (e.g. 'USE1-MP:USE1_InputTokenCount-Units').")

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check
    def charge_period_is_forward(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("ChargePeriodStart") < pl.col("ChargePeriodEnd"))

    @pa.dataframe_check
    def billing_period_is_forward(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("BillingPeriodStart") < pl.col("BillingPeriodEnd"))
