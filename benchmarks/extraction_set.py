"""A small information-extraction set for JSON Schema-constrained generation: 5 schemas, 9 short English texts
each (emails, receipts, notes, ads, chat messages). The expected values are hand-written from the texts, which
state every fact explicitly; every non-enum string in an expected value appears verbatim in its text, and an
optional field is present only where its text states it.

``prompt`` builds the user prompt for a case and ``score`` counts the leaf fields a generated value gets right.
Run this module to check the set: each expected value validates against its schema (needs ``jsonschema``).
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "maxLength": 60}

SCHEMAS: dict[str, dict[str, Any]] = {
    "invoice": {
        "type": "object",
        "properties": {
            "customer": _NAME,
            "total": {"type": "number", "minimum": 0},
            "currency": {"enum": ["USD", "EUR", "GBP", "JPY"]},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 40},
                        "qty": {"type": "integer", "minimum": 1},
                    },
                    "required": ["name", "qty"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 6,
            },
        },
        "required": ["customer", "total", "currency", "items"],
        "additionalProperties": False,
    },
    "contact": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "email": {"type": "string", "maxLength": 60},
            "phone": {"type": "string", "maxLength": 24},
            "company": {"type": "string", "maxLength": 40},
        },
        "required": ["name", "email"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 50},
            "date": {"type": "string", "maxLength": 10},
            "city": {"type": "string", "maxLength": 40},
            "attendees": {"type": "integer", "minimum": 1},
        },
        "required": ["title", "date", "city"],
        "additionalProperties": False,
    },
    "product": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 50},
            "price": {"type": "number", "minimum": 0},
            "category": {"enum": ["electronics", "clothing", "food", "books", "home"]},
            "in_stock": {"type": "boolean"},
        },
        "required": ["name", "price", "category", "in_stock"],
        "additionalProperties": False,
    },
    "address": {
        "type": "object",
        "properties": {
            "person": {"type": "string", "maxLength": 40},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string", "maxLength": 50},
                    "city": {"type": "string", "maxLength": 40},
                    "postcode": {"type": "string", "maxLength": 12},
                    "country": {"type": "string", "maxLength": 40},
                },
                "required": ["street", "city", "postcode", "country"],
                "additionalProperties": False,
            },
        },
        "required": ["person", "address"],
        "additionalProperties": False,
    },
}


def _items(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"name": name, "qty": qty} for name, qty in pairs]


def _addr(person: str, street: str, city: str, postcode: str, country: str) -> dict[str, Any]:
    return {"person": person, "address": {"street": street, "city": city, "postcode": postcode, "country": country}}


CASES: list[dict[str, Any]] = [
    # invoice
    {
        "id": "invoice-01",
        "schema": "invoice",
        "text": "Invoice INV-2031\nBill to: Harbor Street Bakery\n3 x Flour sack\n2 x Yeast box\nTotal due: 34.50 USD",
        "expected": {"customer": "Harbor Street Bakery", "total": 34.5, "currency": "USD",
                     "items": _items(("Flour sack", 3), ("Yeast box", 2))},
    },
    {
        "id": "invoice-02",
        "schema": "invoice",
        "text": "Hi Maria, please find attached the invoice for Lindqvist Design AB. It covers 1 Logo package and "
        "4 Business card sets, for a total of 480.00 EUR.",
        "expected": {"customer": "Lindqvist Design AB", "total": 480.0, "currency": "EUR",
                     "items": _items(("Logo package", 1), ("Business card sets", 4))},
    },
    {
        "id": "invoice-03",
        "schema": "invoice",
        "text": "Receipt for Tom Becker. Items: Espresso machine (qty 1), Coffee filter pack (qty 5). "
        "Total: 212.99 GBP.",
        "expected": {"customer": "Tom Becker", "total": 212.99, "currency": "GBP",
                     "items": _items(("Espresso machine", 1), ("Coffee filter pack", 5))},
    },
    {
        "id": "invoice-04",
        "schema": "invoice",
        "text": "hey, can you bill Nakamura Trading for 10 Ceramic bowls and 10 Ceramic plates? "
        "total comes to 36000 JPY",
        "expected": {"customer": "Nakamura Trading", "total": 36000, "currency": "JPY",
                     "items": _items(("Ceramic bowls", 10), ("Ceramic plates", 10))},
    },
    {
        "id": "invoice-05",
        "schema": "invoice",
        "text": "Customer: Greenleaf Cafe. Line items: Oat milk carton x12, Paper cups x200, Napkin pack x6. "
        "Grand total: 97.40 USD.",
        "expected": {"customer": "Greenleaf Cafe", "total": 97.4, "currency": "USD",
                     "items": _items(("Oat milk carton", 12), ("Paper cups", 200), ("Napkin pack", 6))},
    },
    {
        "id": "invoice-06",
        "schema": "invoice",
        "text": "Note to self: invoiced Aisha Rahman today for 1 Standing desk. She will pay the total of 649.00 EUR "
        "by bank transfer.",
        "expected": {"customer": "Aisha Rahman", "total": 649.0, "currency": "EUR",
                     "items": _items(("Standing desk", 1))},
    },
    {
        "id": "invoice-07",
        "schema": "invoice",
        "text": "Billing summary. Client: Northwind Logistics; 2 Laptop stands, 2 Wireless keyboards, 1 Monitor arm; "
        "total 315.75 USD.",
        "expected": {"customer": "Northwind Logistics", "total": 315.75, "currency": "USD",
                     "items": _items(("Laptop stands", 2), ("Wireless keyboards", 2), ("Monitor arm", 1))},
    },
    {
        "id": "invoice-08",
        "schema": "invoice",
        "text": "Please send the invoice to Oliver Grant. He ordered 6 Tulip bulbs and 3 Garden gloves, "
        "41.20 GBP in total.",
        "expected": {"customer": "Oliver Grant", "total": 41.2, "currency": "GBP",
                     "items": _items(("Tulip bulbs", 6), ("Garden gloves", 3))},
    },
    {
        "id": "invoice-09",
        "schema": "invoice",
        "text": "Order #5520 for Sakura Tea House: Matcha tin x4, Bamboo whisk x2, Tea bowl x2. "
        "Amount payable: 12800 JPY.",
        "expected": {"customer": "Sakura Tea House", "total": 12800, "currency": "JPY",
                     "items": _items(("Matcha tin", 4), ("Bamboo whisk", 2), ("Tea bowl", 2))},
    },
    # contact
    {
        "id": "contact-01",
        "schema": "contact",
        "text": "Hi, I'm Priya Natarajan from Brightwave Analytics. You can reach me at priya.n@brightwave.io "
        "or on +1 415 555 0132.",
        "expected": {"name": "Priya Natarajan", "email": "priya.n@brightwave.io", "phone": "+1 415 555 0132",
                     "company": "Brightwave Analytics"},
    },
    {
        "id": "contact-02",
        "schema": "contact",
        "text": "Contact: Jonas Weber, jonas.weber@mailbox.de",
        "expected": {"name": "Jonas Weber", "email": "jonas.weber@mailbox.de"},
    },
    {
        "id": "contact-03",
        "schema": "contact",
        "text": "Please add Emily Carter (emily.carter@northfield.com) to the mailing list; she works at "
        "Northfield Partners.",
        "expected": {"name": "Emily Carter", "email": "emily.carter@northfield.com", "company": "Northfield Partners"},
    },
    {
        "id": "contact-04",
        "schema": "contact",
        "text": "Best regards,\nDaniel Okafor\nSales Manager, Kestrel Motors\ndaniel.okafor@kestrelmotors.com\n"
        "Tel: 020 7946 0958",
        "expected": {"name": "Daniel Okafor", "email": "daniel.okafor@kestrelmotors.com", "phone": "020 7946 0958",
                     "company": "Kestrel Motors"},
    },
    {
        "id": "contact-05",
        "schema": "contact",
        "text": "New lead: Sofia Marquez, sofia.marquez@gmail.com, phone 555-0199.",
        "expected": {"name": "Sofia Marquez", "email": "sofia.marquez@gmail.com", "phone": "555-0199"},
    },
    {
        "id": "contact-06",
        "schema": "contact",
        "text": "Met Kenji Tanaka at the conference, he works for Aoba Robotics. "
        "His email is k.tanaka@aoba-robotics.jp.",
        "expected": {"name": "Kenji Tanaka", "email": "k.tanaka@aoba-robotics.jp", "company": "Aoba Robotics"},
    },
    {
        "id": "contact-07",
        "schema": "contact",
        "text": "can you reach out to Hannah Schulz? her address is hannah@schulz-consulting.eu",
        "expected": {"name": "Hannah Schulz", "email": "hannah@schulz-consulting.eu"},
    },
    {
        "id": "contact-08",
        "schema": "contact",
        "text": "Support ticket #88213 opened by Marcus Lee (marcus.lee@fastmail.com, +44 7700 900123).",
        "expected": {"name": "Marcus Lee", "email": "marcus.lee@fastmail.com", "phone": "+44 7700 900123"},
    },
    {
        "id": "contact-09",
        "schema": "contact",
        "text": "For partnership questions, contact Grace Liu at Tidewater Foods: grace.liu@tidewaterfoods.com, "
        "(312) 555-0147.",
        "expected": {"name": "Grace Liu", "email": "grace.liu@tidewaterfoods.com", "phone": "(312) 555-0147",
                     "company": "Tidewater Foods"},
    },
    # event
    {
        "id": "event-01",
        "schema": "event",
        "text": "Join us for the Spring Developer Meetup on 2025-03-14 in Berlin! About 120 attendees are expected.",
        "expected": {"title": "Spring Developer Meetup", "date": "2025-03-14", "city": "Berlin", "attendees": 120},
    },
    {
        "id": "event-02",
        "schema": "event",
        "text": "Reminder: the Quarterly Sales Review takes place in Chicago on 2025-04-02.",
        "expected": {"title": "Quarterly Sales Review", "date": "2025-04-02", "city": "Chicago"},
    },
    {
        "id": "event-03",
        "schema": "event",
        "text": "The Open Source Summit will be held in Lisbon on 2025-09-18, with 850 registered attendees.",
        "expected": {"title": "Open Source Summit", "date": "2025-09-18", "city": "Lisbon", "attendees": 850},
    },
    {
        "id": "event-04",
        "schema": "event",
        "text": "are you coming to Jazz Night? it's on 2025-06-21 in New Orleans",
        "expected": {"title": "Jazz Night", "date": "2025-06-21", "city": "New Orleans"},
    },
    {
        "id": "event-05",
        "schema": "event",
        "text": "Event: Charity Fun Run. Date: 2025-05-11. City: Toronto. Attendees: 300.",
        "expected": {"title": "Charity Fun Run", "date": "2025-05-11", "city": "Toronto", "attendees": 300},
    },
    {
        "id": "event-06",
        "schema": "event",
        "text": "We're hosting the Data Science Workshop in Bangalore on 2025-07-08. "
        "So far 40 attendees have signed up.",
        "expected": {"title": "Data Science Workshop", "date": "2025-07-08", "city": "Bangalore", "attendees": 40},
    },
    {
        "id": "event-07",
        "schema": "event",
        "text": "Save the date: Annual Board Meeting, 2025-11-03, Zurich.",
        "expected": {"title": "Annual Board Meeting", "date": "2025-11-03", "city": "Zurich"},
    },
    {
        "id": "event-08",
        "schema": "event",
        "text": "The Farmers Market Festival returns to Portland on 2025-08-16, and the organisers expect "
        "2500 attendees.",
        "expected": {"title": "Farmers Market Festival", "date": "2025-08-16", "city": "Portland", "attendees": 2500},
    },
    {
        "id": "event-09",
        "schema": "event",
        "text": "Hi all, the Team Offsite will be in Barcelona on 2025-10-09. We will be 25 attendees in total.",
        "expected": {"title": "Team Offsite", "date": "2025-10-09", "city": "Barcelona", "attendees": 25},
    },
    # product
    {
        "id": "product-01",
        "schema": "product",
        "text": "The Sony WH-1000XM5 headphones are on sale for 349.99. Category: electronics. Currently in stock.",
        "expected": {"name": "Sony WH-1000XM5", "price": 349.99, "category": "electronics", "in_stock": True},
    },
    {
        "id": "product-02",
        "schema": "product",
        "text": "Merino Wool Sweater, 89.00, clothing. Sorry, this item is out of stock.",
        "expected": {"name": "Merino Wool Sweater", "price": 89.0, "category": "clothing", "in_stock": False},
    },
    {
        "id": "product-03",
        "schema": "product",
        "text": "Fresh from the farm: Organic Honey Jar for just 12.50! Grab one while it's in stock.",
        "expected": {"name": "Organic Honey Jar", "price": 12.5, "category": "food", "in_stock": True},
    },
    {
        "id": "product-04",
        "schema": "product",
        "text": "The book The Midnight Library costs 14.99 but is currently sold out.",
        "expected": {"name": "The Midnight Library", "price": 14.99, "category": "books", "in_stock": False},
    },
    {
        "id": "product-05",
        "schema": "product",
        "text": "Bamboo Cutting Board. Price: 24.95. Department: home. Available now, in stock.",
        "expected": {"name": "Bamboo Cutting Board", "price": 24.95, "category": "home", "in_stock": True},
    },
    {
        "id": "product-06",
        "schema": "product",
        "text": "Listing: Anker PowerCore 10000 (power bank), 29.99, electronics, in stock: no.",
        "expected": {"name": "Anker PowerCore 10000", "price": 29.99, "category": "electronics", "in_stock": False},
    },
    {
        "id": "product-07",
        "schema": "product",
        "text": "Dark Roast Coffee Beans, 1 kg bag, 18.40. In stock.",
        "expected": {"name": "Dark Roast Coffee Beans", "price": 18.4, "category": "food", "in_stock": True},
    },
    {
        "id": "product-08",
        "schema": "product",
        "text": "Hey, the Linen Duvet Cover you asked about is 65.00 and it's back in stock! Great for any bedroom.",
        "expected": {"name": "Linen Duvet Cover", "price": 65.0, "category": "home", "in_stock": True},
    },
    {
        "id": "product-09",
        "schema": "product",
        "text": "Our Trail Running Shorts are priced at 22 and are currently out of stock.",
        "expected": {"name": "Trail Running Shorts", "price": 22, "category": "clothing", "in_stock": False},
    },
    # address
    {
        "id": "address-01",
        "schema": "address",
        "text": "Please ship the order to Laura Bennett, 42 Maple Avenue, Leeds, LS6 2AB, United Kingdom.",
        "expected": _addr("Laura Bennett", "42 Maple Avenue", "Leeds", "LS6 2AB", "United Kingdom"),
    },
    {
        "id": "address-02",
        "schema": "address",
        "text": "Deliver to:\nMarco Rossi\nVia Roma 15\n00184 Rome\nItaly",
        "expected": _addr("Marco Rossi", "Via Roma 15", "Rome", "00184", "Italy"),
    },
    {
        "id": "address-03",
        "schema": "address",
        "text": "My new address is 1600 Amphitheatre Parkway, Mountain View, 94043, USA. Thanks, Chris Doyle",
        "expected": _addr("Chris Doyle", "1600 Amphitheatre Parkway", "Mountain View", "94043", "USA"),
    },
    {
        "id": "address-04",
        "schema": "address",
        "text": "Send the package to Anna Kowalska at ul. Kwiatowa 7, 30-001 Krakow, Poland.",
        "expected": _addr("Anna Kowalska", "ul. Kwiatowa 7", "Krakow", "30-001", "Poland"),
    },
    {
        "id": "address-05",
        "schema": "address",
        "text": "Recipient: Lukas Meier, Bahnhofstrasse 21, 8001 Zurich, Switzerland.",
        "expected": _addr("Lukas Meier", "Bahnhofstrasse 21", "Zurich", "8001", "Switzerland"),
    },
    {
        "id": "address-06",
        "schema": "address",
        "text": "Hi! Could you mail the contract to Sarah O'Connor, 8 Harbour Road, Dublin, D04 X2Y1, Ireland?",
        "expected": _addr("Sarah O'Connor", "8 Harbour Road", "Dublin", "D04 X2Y1", "Ireland"),
    },
    {
        "id": "address-07",
        "schema": "address",
        "text": "Shipping label. Name: Yuki Sato; street: 3-5-1 Shibuya; city: Tokyo; postcode: 150-0002; "
        "country: Japan.",
        "expected": _addr("Yuki Sato", "3-5-1 Shibuya", "Tokyo", "150-0002", "Japan"),
    },
    {
        "id": "address-08",
        "schema": "address",
        "text": "Returns go to Pierre Dubois, 27 Rue de Rivoli, 75004 Paris, France.",
        "expected": _addr("Pierre Dubois", "27 Rue de Rivoli", "Paris", "75004", "France"),
    },
    {
        "id": "address-09",
        "schema": "address",
        "text": "While I'm away, forward my mail to my brother Ahmed Hassan, 55 King Street, Toronto, M5H 1A1, Canada.",
        "expected": _addr("Ahmed Hassan", "55 King Street", "Toronto", "M5H 1A1", "Canada"),
    },
]


def prompt(case: dict[str, Any]) -> str:
    """The user prompt for one case: the schema's name and the text (no schema in the prompt)."""
    return f"Extract the {case['schema']} from this text as JSON.\n\nText: {case['text']}"


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def _leaf_equal(expected: Any, got: Any) -> bool:
    if isinstance(expected, bool):
        return isinstance(got, bool) and got == expected
    if isinstance(expected, str):
        return isinstance(got, str) and got.strip().casefold() == expected.strip().casefold()
    if isinstance(expected, int | float):
        return isinstance(got, int | float) and not isinstance(got, bool) and abs(got - expected) <= 1e-6
    return bool(got == expected)


def score(expected: Any, got: object) -> tuple[int, int]:
    """(fields correct, fields total) for a generated value ``got`` against ``expected``, counting leaf fields.

    The walk follows ``expected``: each key of a dict is a field (missing from ``got``: all its leaves wrong); a list
    is compared element-wise by position over the length of ``expected`` (missing elements wrong, extra elements
    ignored), each leaf inside counted; a value of the wrong shape makes all leaves under it wrong. Strings compare
    case-insensitively after stripping whitespace, numbers within 1e-6 (int 2 equals float 2.0, a boolean is not a
    number), booleans exactly. A key present in a ``got`` dict but absent from the ``expected`` one (a hallucinated
    optional field) adds one wrong field to the total.
    """
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return 0, _leaves(expected)
        correct, total = 0, 0
        for key, value in expected.items():
            c, t = score(value, got[key]) if key in got else (0, _leaves(value))
            correct, total = correct + c, total + t
        return correct, total + sum(1 for key in got if key not in expected)
    if isinstance(expected, list):
        if not isinstance(got, list):
            return 0, _leaves(expected)
        correct, total = 0, 0
        for i, value in enumerate(expected):
            c, t = score(value, got[i]) if i < len(got) else (0, _leaves(value))
            correct, total = correct + c, total + t
        return correct, total
    return int(_leaf_equal(expected, got)), 1


if __name__ == "__main__":
    import jsonschema

    def _strings(value: Any, schema: dict[str, Any]) -> list[str]:
        """The non-enum string leaves of ``value`` (those that should appear verbatim in the text)."""
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in _strings(v, schema["properties"][k])]
        if isinstance(value, list):
            return [s for v in value for s in _strings(v, schema["items"])]
        return [value] if isinstance(value, str) and "enum" not in schema else []

    assert len({c["id"] for c in CASES}) == len(CASES), "duplicate case ids"
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for case in CASES:
        schema = SCHEMAS[case["schema"]]
        jsonschema.Draft202012Validator(schema).validate(case["expected"])
        for s in _strings(case["expected"], schema):
            assert s in case["text"], f"{case['id']}: {s!r} not in the text"
        n = _leaves(case["expected"])
        assert score(case["expected"], case["expected"]) == (n, n), case["id"]
    counts = {name: sum(c["schema"] == name for c in CASES) for name in SCHEMAS}
    print(f"{len(CASES)} cases valid: {counts}")
