"""Activities for the example workflows.

Serve them with ``python -m actors.worker --activities actors.examples.activities``.

They stand in for calls to real services; each is deterministic so the
examples print the same results on every run.
"""

from __future__ import annotations

from typing import Any

import trio

import actors

_PRICES = {"apple": 0.5, "pear": 0.75, "melon": 3.0}
_STOCK = {"apple": 100, "pear": 40, "melon": 5}


class OutOfStock(actors.ActivityError):
    """Not enough of an item; retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, non_retryable=True)


@actors.activity
async def reserve_stock(request: dict[str, Any]) -> dict[str, Any]:
    """Reserve every item of an order; the total price comes back."""
    total = 0.0
    for line in request["items"]:
        sku, quantity = line["sku"], int(line["quantity"])
        if quantity > _STOCK.get(sku, 0):
            raise OutOfStock(f"only {_STOCK.get(sku, 0)} {sku} left, {quantity} wanted")
        total += _PRICES[sku] * quantity
    await trio.sleep(0.01)
    return {"order": request["order"], "total": round(total, 2)}


@actors.activity
def charge_card(request: dict[str, Any]) -> dict[str, Any]:
    """Charge the order's total (a sync activity: it runs in a worker thread)."""
    actors.heartbeat()
    return {
        "order": request["order"],
        "charged": request["amount"],
        "receipt": f"r-{request['order']}",
    }


@actors.activity
async def authorize_card(request: dict[str, Any]) -> dict[str, Any]:
    """Put a hold on the customer's card (declined if there is no card)."""
    if not request.get("card"):
        raise actors.ActivityError("no card on file", type="CardDeclined", non_retryable=True)
    return {"order": request["order"], "hold": f"h-{request['order']}"}


# A compensation runs for every step whose task went out, even one that
# failed or was abandoned: it then gets what the step was asked (its input),
# not an output, and undoes whatever of it took effect, which may be nothing.


@actors.activity
async def void_authorization(hold: dict[str, Any]) -> dict[str, Any]:
    """Lift the hold (the compensation of authorize_card); none was put: nothing to do."""
    return {"order": hold["order"], "voided": hold.get("hold")}


@actors.activity
async def release_stock(reservation: dict[str, Any]) -> dict[str, Any]:
    """Undo a reservation (the compensation of reserve_stock), or what of it was made."""
    return {"order": reservation["order"], "released": True}


@actors.activity
async def refund_card(payment: dict[str, Any]) -> dict[str, Any]:
    """Give the money back (the compensation of charge_card); nothing if none was taken."""
    return {"order": payment["order"], "refunded": payment.get("charged", 0)}


@actors.activity
async def ship(request: dict[str, Any]) -> dict[str, Any]:
    """Hand the order to the carrier."""
    await trio.sleep(0.01)
    parcel = request["order"].upper() + (f"-{request['line']}" if "line" in request else "")
    return {"order": request["order"], "tracking": f"TRK-{parcel}"}


@actors.activity
async def increment(value: dict[str, Any]) -> dict[str, Any]:
    """Return the input with its counter incremented (the benchmark's activity)."""
    return {**value, "count": value.get("count", 0) + 1}


@actors.activity
async def send_payout(request: dict[str, Any]) -> dict[str, Any]:
    """Transfer the amount to the account (the bank takes a moment)."""
    await trio.sleep(0.01)
    return {"account": request["account"], "paid": request["amount"]}
