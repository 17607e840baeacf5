"""Regenerate the packaged demo datasets (deterministic: same files on every run).

    python resources/data/make_demo.py

Writes, next to this script:
  demo_classification_train.jsonl       720 customer-support messages, {"text", "label"}
  demo_classification_validation.jsonl  200 more, none sharing a core sentence with train
  demo_causal.jsonl                     capitals, unit conversions and arithmetic word problems,
                                        {"prompt", "completion"}
  demo_chat.jsonl                       50 short conversations, {"messages": [{role, content}]}

Classification: four intents (account, billing, shipping, technical), balanced. Each message is
a situation written by hand (many of them without the intent's obvious keyword: "two identical
amounts left my account" is billing, "the box never turned up" is shipping), with slots filled
from lists (products, amounts, devices, cities …), wrapped in a random greeting, context sentence
and sign-off, sometimes typed casually ([a|b] in a situation marks paraphrases). Half of the
validation messages come from situations never used in training; in the other half, no core
sentence (situation + slots + paraphrase) is also in train. Validation accuracy thus measures
generalization, not recall of the training text.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).parent
SEED = 1234
TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 180, 50
HELD_OUT_TEMPLATES = 6  # situations per intent seen only in validation

SLOTS = {
    "product": ["headset", "standing desk", "coffee grinder", "phone case", "winter jacket",
                "yoga mat", "smart watch", "blender", "desk lamp", "pair of running shoes", "backpack",
                "bluetooth speaker", "air fryer", "office chair", "monitor", "mechanical keyboard",
                "tea kettle", "electric toothbrush", "camera tripod", "robot vacuum", "e-reader",
                "baby monitor", "espresso machine", "gaming mouse", "fitness tracker", "router"],
    "gadget": ["smart watch", "bluetooth speaker", "robot vacuum", "e-reader", "baby monitor",
               "fitness tracker", "router", "headset", "espresso machine", "smart plug",
               "doorbell camera", "thermostat"],
    "device": ["iPhone", "Android phone", "Pixel", "Samsung tablet", "Windows laptop", "MacBook",
               "Chromebook", "iPad", "work PC", "old laptop"],
    "browser": ["Chrome", "Firefox", "Safari", "Edge", "Brave"],
    "code": ["E-403", "error 500", "code 0x80070005", "ERR_CONNECTION_RESET", "error 1020",
             "'something went wrong (E12)'", "status 502", "timeout error 408"],
    "feature": ["the search bar", "the dashboard", "photo upload", "the export button", "dark mode",
                "the calendar view", "the order history page", "the chat window", "the settings screen",
                "the barcode scanner", "the wishlist", "the map view"],
    "amount": ["$12.99", "$49", "$7.50", "$129", "$23.40", "€30", "€89.99", "£18.50", "£64", "$310",
               "$4.99", "€15"],
    "card": ["Visa", "Mastercard", "Amex", "debit card", "credit card", "PayPal account", "bank account"],
    "plan": ["premium plan", "family plan", "annual subscription", "pro tier", "basic plan",
             "student plan", "monthly membership", "business plan"],
    "days": ["three days", "a week", "ten days", "two weeks", "5 days", "over a week", "nearly a month",
             "four days"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "the weekend"],
    "city": ["Denver", "Leeds", "Toronto", "Lyon", "Austin", "Glasgow", "Melbourne", "Dublin", "Seattle",
             "Porto", "Hamburg", "Calgary"],
    "country": ["Canada", "Norway", "Japan", "Brazil", "Ireland", "New Zealand", "Mexico", "Switzerland",
                "South Africa", "Iceland"],
    "carrier": ["UPS", "FedEx", "DHL", "the postal service", "the courier", "the driver", "Royal Mail"],
    "person": ["my wife", "my husband", "my son", "my daughter", "a colleague", "my business partner",
               "my assistant", "my mum", "my roommate"],
    "holiday": ["Christmas", "my sister's birthday", "Mother's Day", "the 15th", "next Friday",
                "our wedding", "Thanksgiving"],
    "order": ["#48213", "#50377", "#61902", "#70455", "#33018", "#88120", "#29764", "#91536", "#45871",
              "#67203"],
    "percent": ["20%", "10%", "15%", "half", "30%"],
}

# {slot} and {slot2} (a second, different value of the same slot)
TEMPLATES = {
    "billing": [
        "I was charged twice for order {order}. Can one of them be refunded?",
        "There are two identical payments of {amount} from you on my {card} this month.",
        "Why did the price of my {plan} go from {amount} to {amount2} without any warning?",
        "I cancelled on {weekday} but the money still came out of my {card}.",
        "Could I get an invoice with my company's VAT number on it for order {order}?",
        "The discount code didn't work and I ended up paying full price for the {product}.",
        "My {card} keeps getting declined at checkout even though there's plenty on it.",
        "I'd like to switch from paying monthly to yearly. How much would that save me?",
        "You took {amount} from me for something I never ordered.",
        "Is it possible to pay for the {product} in instalments?",
        "The refund for the {product} I sent back still hasn't shown up on my {card}.",
        "The receipt says {amount} but my bank statement shows {amount2}.",
        "Do you take Apple Pay, or only cards?",
        "The free trial was supposed to be free, so why is there a {amount} charge?",
        "I need a copy of last month's receipt for my expense report.",
        "The card you have on file expired. Where do I put in the new one?",
        "I think the sales tax was added twice on my last purchase.",
        "My student discount wasn't applied to the {plan}.",
        "What is the extra {amount} fee that appeared at the last step of checkout?",
        "My bank flagged a payment of {amount} to you as suspicious. Was that really you?",
        "I downgraded to the {plan} but I'm still paying the old rate.",
        "It said the payment failed, but the money left my {card} anyway.",
        "Can I split the cost of order {order} across two cards?",
        "My {plan} renewed on its own and I didn't want it to. Can I have that money back?",
        "Where can I see everything I've spent with you this year?",
        "The gift card shows a zero balance but I only used about {percent} of it.",
        "You promised to price match, and the same {product} is {amount} cheaper elsewhere.",
        "There's a pending hold of {amount} for an order I cancelled yesterday.",
        "Please stop renewing my {plan} automatically and credit the last payment.",
        "The order was listed in dollars but I was billed in euros at a terrible rate.",
        "Two identical amounts came out of my account on the same day.",
        "The number on my statement doesn't match what the checkout page showed.",
        "I paid for express delivery on order {order} and it came standard, so I want the difference back.",
        "How much will it cost to add {person} to my {plan}?",
        "Am I going to be charged again when the {plan} ends, or does it just stop?",
        "Half of the {amount} I paid went missing somewhere between you and my bank.",
        "I was told the {product} was on sale for {percent} off but I paid the normal price.",
        "Can you send the invoice to my accountant instead of me?",
        "My {card} was debited {amount} for a subscription I cancelled in the spring.",
        "Could you explain what the line 'service adjustment {amount}' on my statement means?",
        "I want my money back for the {plan}. I haven't used it once since it started.",
        "Your site took the payment but the order never went through. Where did my {amount} go?",
        "Is there a way to pay by bank transfer instead of by card?",
        "The coupon from your newsletter says {percent} off, but the total didn't change.",
        "I'm being asked to pay {amount} for the {product}, which was advertised as included.",
    ],
    "technical": [
        "The app crashes as soon as I open {feature} on my {device}.",
        "I keep getting {code} whenever I try to save my changes in {browser}.",
        "The page just spins forever and never finishes loading on my {device}.",
        "Since the last update, {feature} is completely blank.",
        "Videos stutter on my {device} even though my wifi is fast.",
        "Notifications stopped arriving on my {device} after I updated it.",
        "Exporting to PDF gives me an empty file every time.",
        "Your website looks broken in {browser}; the buttons overlap the text.",
        "Syncing between my {device} and my {device2} has stopped working.",
        "The {gadget} won't pair with my {device} over bluetooth.",
        "My {gadget} turns on but the screen stays black.",
        "The firmware update got stuck at 60% and now the {gadget} won't start.",
        "Uploading photos fails halfway through every single time.",
        "The search returns nothing, even for things I know are there.",
        "The app has become really slow; it takes a minute to open anything on my {device}.",
        "Every time I press save I get {code}.",
        "The {gadget} keeps dropping off the wifi every few minutes.",
        "Is something down on your end? Nothing is loading for me right now.",
        "The battery on my {gadget} is dead after two hours. It used to last all day.",
        "With dark mode on, half the text is unreadable on my {device}.",
        "I can't get the {gadget} to show up in the companion app.",
        "After reinstalling, the app won't get past the splash screen.",
        "Tapping the checkout button on my {device} does nothing at all.",
        "Sound cuts out on the {gadget} every few seconds.",
        "{feature} shows everything one hour off since the clocks changed.",
        "I get a certificate warning in {browser} when I open your site.",
        "The {gadget} makes a grinding noise and then switches itself off.",
        "The widgets on my home screen stopped refreshing.",
        "Importing my CSV says 'unexpected format' but the file looks fine to me.",
        "The {gadget} blinks orange and won't respond to any buttons.",
        "The desktop app freezes my {device} when I open large files.",
        "Half the images on the product pages don't load in {browser}.",
        "The {gadget} stopped responding to voice commands yesterday.",
        "{feature} throws {code} on my {device}.",
        "Scrolling in {feature} jumps back to the top every few seconds.",
        "The companion app says my {gadget} is offline even though it's right next to the router.",
        "Keyboard shortcuts stopped working in the web version after the redesign.",
        "The {gadget} restarts on its own several times a day.",
        "I followed the setup guide twice and the {gadget} still won't connect.",
        "Everything I type in {feature} disappears when I switch tabs.",
        "The app uses so much memory that my {device} gets hot.",
        "The camera preview in {feature} is just a grey box.",
        "Printing an order confirmation cuts off the right half of the page.",
        "The {gadget} shows the wrong time even after resetting it.",
        "The screen goes white when I rotate my {device} in the app.",
    ],
    "shipping": [
        "My {product} was supposed to arrive on {weekday} and there's still no sign of it.",
        "The tracking for order {order} hasn't moved in {days}.",
        "It says delivered, but there's nothing at my door.",
        "Can I change the delivery address for order {order}? I'm moving to {city}.",
        "Do you send orders to {country}?",
        "The box arrived crushed and the {product} inside is dented.",
        "Only part of my order came; the {product} is missing.",
        "How long does standard delivery usually take to {city}?",
        "Is there a faster option for getting the {product} to me?",
        "My parcel is stuck in customs. What do I need to do?",
        "{carrier} left a card saying they'll try again, but I'm away until {weekday}.",
        "Can I collect my order from a store instead of waiting for it?",
        "It's been {days} and the status still says 'label created'.",
        "The parcel went to my old address even though I changed it.",
        "Could you hold my package until I'm back from holiday?",
        "I received someone else's things instead of my {product}.",
        "Where is my stuff? I ordered it {days} ago.",
        "My neighbour says a driver came by but didn't leave anything.",
        "Will my order get here before {holiday}?",
        "Can my two orders be sent together in one box?",
        "The {product} came without the cable that should be in the box.",
        "The delivery window is 8am to 8pm. Can it be narrowed down?",
        "How do I get a return label for the {product}?",
        "The box never turned up and it's been {days}.",
        "{carrier} says the address is incomplete, but it's the same one I always use.",
        "Can someone else sign for the package if I'm not home?",
        "My order {order} shows as shipped to {city}, but I live somewhere else.",
        "The {product} arrived wet and the packaging was torn open.",
        "Do you deliver on weekends? I'm at work all week.",
        "Where can I drop off a return near {city}?",
        "The order page says dispatched, but {carrier} has never heard of the tracking number.",
        "I was told it would be here in two days and it's now been {days}.",
        "The parcel was left out in the rain by the front gate.",
        "Can you leave it with the building's front desk next time?",
        "My {product} has been 'out for delivery' since {weekday}.",
        "I'm going to be in {city} for a month. Can I send my order there instead?",
        "How can I see where my package is right now?",
        "The driver asked me to pay a fee on the doorstep. Is that normal for orders to {country}?",
        "I got two of the {product} but only ordered one. How do I send one back?",
        "Some of the items from order {order} are coming separately; when will the rest arrive?",
        "The {product} is listed as 'ships in 3 weeks'. Is there any way to get it sooner?",
        "My package has been sitting at the local depot for {days}.",
        "Can I choose a specific day for delivery? I'm only home on {weekday}.",
        "Nobody came, but the app says they attempted delivery at noon.",
        "The return I sent back {days} ago still isn't showing as received.",
    ],
    "account": [
        "I [can't remember|have no idea|forgot] which email address I [signed up|registered] with.",
        "Please [delete|close|remove] my account and [everything you store about me|all my data].",
        "The password reset email [never arrives|hasn't come through|isn't in my inbox or spam].",
        "Someone signed in to my account from {city}, and it wasn't me.",
        "I want to change the name on my profile [after getting married|because I changed it legally].",
        "I'm locked out after [entering the wrong password|getting my password wrong] too many times.",
        "How do I [turn on|set up|switch on] two-factor authentication?",
        "I lost the phone with my authenticator app. How do I get back in?",
        "I [accidentally made|ended up with] a second account. Can the two be merged?",
        "I'd like to add {person} as a second user on my profile.",
        "How do I change the email address I use to sign in? [I'm leaving my job|The old one is shutting down].",
        "I never got the email to verify my address when I signed up.",
        "How do I stop getting your [marketing emails|newsletters|promotional texts]?",
        "My profile is showing someone else's [name and photo|details].",
        "Why has my account been [suspended|frozen|disabled]?",
        "Can I hand my account over to {person}?",
        "I want a copy of all the personal data you hold about me.",
        "I signed up with [Google|Facebook|my Apple ID], but now I want a normal password instead.",
        "My date of birth is wrong on my profile and I can't edit it.",
        "How do I sign out of every device at once? [I left myself signed in at a hotel|I sold my {device}].",
        "The security questions I set up years ago don't seem to work anymore.",
        "Can I change my username? The one I picked [is embarrassing|was a joke|has my old surname in it].",
        "I think I've been hacked; the [email|phone number] on my account was changed.",
        "If I close my account, do I lose my order history?",
        "My kid made a profile with my email address. How do I take it over?",
        "How do I make my profile private?",
        "The code for signing in goes to my old phone number.",
        "I share a profile with {person} and we'd like separate ones.",
        "Can you remove my old address from my saved details? [I moved to {city}|It's out of date].",
        "I keep being asked to verify who I am every time I sign in on my {device}.",
        "I got an email saying my password was changed, but I didn't change it.",
        "Is it possible to have two email addresses on one profile?",
        "I want to update the phone number on my profile.",
        "My loyalty points disappeared when I changed my email.",
        "How can I see which devices are signed in as me?",
        "Please take my name off the shared household account; I've moved out.",
        "I want to reopen the account I closed last year.",
        "Why am I asked to confirm my identity with a photo ID?",
        "The sign-up page says my email is already in use, but I've never registered.",
        "I need to change the [preferred language|country] on my profile.",
        "Can {person} have admin rights on our team profile?",
        "I'd like to stop you from sharing my details with partners.",
        "How do I remove my saved login from a shared computer?",
        "My profile was merged with {person}'s by mistake.",
        "[Nobody|No one] but me should have access, yet {person} could see my saved addresses.",
    ],
}

OPENERS = ["", "", "", "Hi,", "Hello,", "Hey there,", "Good morning.", "Hi team,", "Quick question:",
           "Hello, hoping you can help.", "Sorry to bother you, but", "Hi, hope you are well.", "Hey,",
           "Good afternoon,", "Urgent:"]
CONTEXT = ["", "", "", "", "I've been a customer for three years.", "This is the second time I'm writing about this.",
           "I tried the help pages already.", "My order number is {order}.", "I'm writing from my partner's phone.",
           "I contacted you last week and heard nothing back.", "I'm on the {plan}.",
           "This started yesterday evening."]
CLOSERS = ["", "", "", "Thanks!", "Thanks in advance.", "Please help.", "Any ideas?", "Appreciate it.",
           "This is really frustrating.", "Let me know.", "Cheers", "Thank you so much.",
           "Can someone get back to me today?", "Kind regards, Sam", "thx"]


def fill(template: str, rng: random.Random) -> str:
    chosen: dict[str, str] = {}

    def value(match):
        slot, second = match.group(1), match.group(2)
        if second:
            options = [v for v in SLOTS[slot] if v != chosen.get(slot)]
            return rng.choice(options)
        chosen.setdefault(slot, rng.choice(SLOTS[slot]))
        return chosen[slot]

    text = re.sub(r"\[([^\]]*)\]", lambda m: rng.choice(m.group(1).split("|")), template)  # [a|b]: paraphrases
    text = re.sub(r"\{([a-z]+)(2?)\}", value, text)
    return text[:1].upper() + text[1:]


# first words that stay capitalized after "Hi," (I, brands, places)
PROPER = {"I", "I'm", "I've", "I'd", "I'll"} | {v.split()[0] for vs in SLOTS.values() for v in vs if v[0].isupper()}


def wrap(core: str, rng: random.Random) -> str:
    opener = rng.choice(OPENERS)
    context = fill(rng.choice(CONTEXT), rng) if rng.random() < 0.5 else ""
    first = core.split()[0]
    if opener.endswith((",", "but")) and first not in PROPER and first.rstrip(",;") not in PROPER:
        core = core[0].lower() + core[1:]  # "Hi, my order …", not "Hi, My order …"
    parts = [core, context] if rng.random() < 0.5 else [context, core]  # context before or after
    if opener.endswith((",", "but")) and parts[0] == context and context:
        parts = [core, context]  # "Hi," leads into the request, not the context
    text = " ".join(p for p in [opener, *parts, rng.choice(CLOSERS)] if p)
    if rng.random() < 0.15:  # typed casually on a phone
        text = text.lower().rstrip(".!")
    return text


def classification(rng: random.Random):
    """Per intent: a few situations are held out for validation only (phrasings the model never
    sees in training); the other situations' distinct core sentences are split between train and
    validation (a core never crosses splits). Each split's cores are then wrapped into distinct
    messages, used round-robin."""
    train, validation, seen = [], [], set()
    for label in sorted(TEMPLATES):
        templates = list(TEMPLATES[label])
        rng.shuffle(templates)
        held, rest = templates[:HELD_OUT_TEMPLATES], templates[HELD_OUT_TEMPLATES:]

        def cores(group):
            out = list(dict.fromkeys(fill(rng.choice(group), rng) for _ in range(60 * len(group))))
            rng.shuffle(out)
            return out

        held_cores, rest_cores = cores(held), cores(rest)
        n_val = round(len(rest_cores) * VALIDATION_PER_CLASS / 2 / (TRAIN_PER_CLASS + VALIDATION_PER_CLASS / 2))
        plan = ((validation, held_cores, VALIDATION_PER_CLASS // 2),
                (validation, rest_cores[:n_val], VALIDATION_PER_CLASS - VALIDATION_PER_CLASS // 2),
                (train, rest_cores[n_val:], TRAIN_PER_CLASS))
        for split, split_cores, size in plan:
            added, i = 0, 0
            while added < size:
                text = wrap(split_cores[i % len(split_cores)], rng)
                i += 1
                if text not in seen:
                    seen.add(text)
                    split.append({"text": text, "label": label})
                    added += 1
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasília", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Nigeria": "Abuja", "Russia": "Moscow", "Poland": "Warsaw", "Sweden": "Stockholm",
    "Norway": "Oslo", "Finland": "Helsinki", "Denmark": "Copenhagen", "the Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern", "Greece": "Athens", "Turkey": "Ankara",
    "Ireland": "Dublin", "the United Kingdom": "London", "Hungary": "Budapest", "the Czech Republic": "Prague",
    "Romania": "Bucharest", "Bulgaria": "Sofia", "Ukraine": "Kyiv", "Iceland": "Reykjavik",
    "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi", "the Philippines": "Manila",
    "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Iran": "Tehran",
    "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Peru": "Lima", "Chile": "Santiago", "Colombia": "Bogotá",
    "Venezuela": "Caracas", "Cuba": "Havana", "Morocco": "Rabat", "Ethiopia": "Addis Ababa", "Ghana": "Accra",
    "New Zealand": "Wellington", "Nepal": "Kathmandu", "Mongolia": "Ulaanbaatar", "Croatia": "Zagreb",
    "Serbia": "Belgrade", "Slovakia": "Bratislava", "Slovenia": "Ljubljana", "Estonia": "Tallinn",
    "Latvia": "Riga", "Lithuania": "Vilnius", "Uruguay": "Montevideo", "Ecuador": "Quito",
    "Jamaica": "Kingston", "Senegal": "Dakar", "Uganda": "Kampala", "Qatar": "Doha", "Jordan": "Amman",
}
CAPITAL_QUESTIONS = ["What is the capital of {c}?", "Name the capital city of {c}.",
                     "Which city is the capital of {c}?"]

# (from unit, to unit, factor)
CONVERSIONS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
               ("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
               ("liters", "milliliters", 1000), ("feet", "inches", 12), ("yards", "feet", 3)]

NAMES = ["Sam", "Priya", "Omar", "Lena", "Kofi", "Mei", "Diego", "Anna", "Tom", "Yuki", "Ravi", "Chloe"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "shells", "coins", "cards"]


def word_problem(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(3, 60), rng.randint(2, 40)
        return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    if kind == 1:
        a = rng.randint(10, 80)
        b = rng.randint(1, a - 1)
        return f"{name} has {a} {item} and gives {b} away. How many {item} are left?", a - b
    if kind == 2:
        k, n = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} fills {k} boxes with {n} {item} each. How many {item} is that in total?", k * n
    if kind == 3:
        k, n = rng.randint(2, 8), rng.randint(2, 12)
        return f"{name} shares {k * n} {item} equally among {k} friends. How many {item} does each friend get?", n
    a, b, c = rng.randint(5, 30), rng.randint(5, 30), rng.randint(1, 10)
    return (f"{name} buys {a} {item} on Monday and {b} on Tuesday, then loses {c}. "
            f"How many {item} does {name} have?", a + b - c)


def causal(rng: random.Random):
    rows, seen = [], set()

    def add(question: str, answer: str):
        if question not in seen:
            seen.add(question)
            rows.append({"prompt": f"Question: {question}\nAnswer:", "completion": f" {answer}"})

    for country, capital in CAPITALS.items():
        add(rng.choice(CAPITAL_QUESTIONS).format(c=country), f"{capital}.")
    for src, dst, factor in CONVERSIONS:
        for n in rng.sample(range(2, 40), 9):
            add(f"Convert {n} {src} to {dst}.", f"{n * factor} {dst}.")
    while len(rows) < 250:
        question, answer = word_problem(rng)
        add(question, f"{answer}.")
    rng.shuffle(rows)
    return rows


def chat(rng: random.Random, n: int = 50):
    def exchange():
        kind = rng.randrange(3)
        if kind == 0:
            country = rng.choice(list(CAPITALS))
            name = country[4:] if country.startswith("the ") else country
            return (rng.choice([f"What's the capital of {country}?", f"Capital of {name}?"]),
                    f"The capital of {country} is {CAPITALS[country]}.")
        if kind == 1:
            src, dst, factor = rng.choice(CONVERSIONS)
            n_ = rng.randint(2, 30)
            return f"How many {dst} are in {n_} {src}?", f"{n_} {src} is {n_ * factor} {dst}."
        question, answer = word_problem(rng)
        return question, f"The answer is {answer}."

    conversations = []
    for _ in range(n):
        messages = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": "You are a concise, friendly assistant."})
        for _ in range(1 if rng.random() < 0.6 else 2):
            question, answer = exchange()
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        conversations.append({"messages": messages})
    return conversations


def write(name: str, rows: list[dict]):
    with open(HERE / name, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} rows")


def main():
    train, validation = classification(random.Random(SEED))
    write("demo_classification_train.jsonl", train)
    write("demo_classification_validation.jsonl", validation)
    write("demo_causal.jsonl", causal(random.Random(SEED + 1)))
    write("demo_chat.jsonl", chat(random.Random(SEED + 2)))


if __name__ == "__main__":
    main()
