"""Writes the data of the shipped lm-eval tasks (run once; the .jsonl files ship with Odyssey).

Questions written for Odyssey (Apache-2.0): general knowledge with one clear answer, so a small model's
score means something, and short so they run on a CPU in a minute.
"""

import json
from pathlib import Path

HERE = Path(__file__).parent

MMLU = [  # (subject, question, [A, B, C, D], index of the answer)
    ("geography", "What is the largest ocean on Earth?", ["Atlantic", "Indian", "Pacific", "Arctic"], 2),
    ("geography", "Which continent is Egypt in?", ["Asia", "Africa", "Europe", "South America"], 1),
    ("geography", "Which river flows through Paris?", ["Thames", "Danube", "Rhine", "Seine"], 3),
    (
        "geography",
        "What is the highest mountain in the world?",
        ["K2", "Mount Everest", "Kilimanjaro", "Mont Blanc"],
        1,
    ),
    (
        "geography",
        "Which country has the largest population in South America?",
        ["Brazil", "Chile", "Peru", "Argentina"],
        0,
    ),
    ("geography", "Which desert is the largest hot desert?", ["Gobi", "Kalahari", "Sahara", "Atacama"], 2),
    (
        "science",
        "What gas do plants take in from the air to make food?",
        ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"],
        2,
    ),
    ("science", "What is the chemical symbol for water?", ["H2O", "CO2", "O2", "NaCl"], 0),
    ("science", "How many legs does an insect have?", ["Four", "Six", "Eight", "Ten"], 1),
    ("science", "Which planet is closest to the Sun?", ["Venus", "Earth", "Mars", "Mercury"], 3),
    ("science", "What is the boiling point of water at sea level in degrees Celsius?", ["50", "90", "100", "120"], 2),
    ("science", "Which organ pumps blood through the body?", ["Lungs", "Heart", "Liver", "Kidney"], 1),
    ("science", "What force keeps us on the ground?", ["Magnetism", "Friction", "Gravity", "Electricity"], 2),
    ("science", "Which planet is known as the Red Planet?", ["Mars", "Jupiter", "Saturn", "Neptune"], 0),
    ("science", "What is the center of an atom called?", ["Electron", "Nucleus", "Shell", "Molecule"], 1),
    ("science", "Which animal is a mammal?", ["Shark", "Frog", "Dolphin", "Eagle"], 2),
    ("science", "What do bees make?", ["Milk", "Silk", "Wax and honey", "Wool"], 2),
    ("science", "What is frozen water called?", ["Steam", "Ice", "Fog", "Dew"], 1),
    ("math", "What is 7 times 8?", ["54", "56", "58", "64"], 1),
    ("math", "What is 144 divided by 12?", ["10", "11", "12", "14"], 2),
    ("math", "How many sides does a hexagon have?", ["Five", "Six", "Seven", "Eight"], 1),
    ("math", "What is 15 plus 27?", ["32", "41", "42", "52"], 2),
    ("math", "What is the square root of 81?", ["7", "8", "9", "10"], 2),
    ("math", "How many minutes are in two hours?", ["100", "120", "140", "200"], 1),
    ("math", "What is 10 percent of 250?", ["2.5", "25", "50", "250"], 1),
    ("math", "Which number is prime?", ["9", "15", "21", "13"], 3),
    (
        "history",
        "Who was the first person to walk on the Moon?",
        ["Yuri Gagarin", "Neil Armstrong", "Buzz Aldrin", "John Glenn"],
        1,
    ),
    ("history", "In which country were the ancient pyramids of Giza built?", ["Mexico", "Greece", "Egypt", "India"], 2),
    (
        "history",
        "Which war ended in 1945?",
        ["World War I", "World War II", "The Cold War", "The Hundred Years' War"],
        1,
    ),
    (
        "history",
        "Who painted the Mona Lisa?",
        ["Vincent van Gogh", "Pablo Picasso", "Leonardo da Vinci", "Claude Monet"],
        2,
    ),
    (
        "history",
        "Which empire built the Colosseum?",
        ["The Roman Empire", "The Ottoman Empire", "The Mongol Empire", "The Inca Empire"],
        0,
    ),
    (
        "history",
        "Who wrote the play Romeo and Juliet?",
        ["Charles Dickens", "William Shakespeare", "Jane Austen", "Mark Twain"],
        1,
    ),
    (
        "computing",
        "What does CPU stand for?",
        ["Central Processing Unit", "Computer Power Unit", "Core Program Utility", "Central Print Unit"],
        0,
    ),
    ("computing", "How many bits are in a byte?", ["4", "8", "16", "32"], 1),
    ("computing", "Which of these is a programming language?", ["HTML5 Canvas", "Python", "JPEG", "USB"], 1),
    (
        "computing",
        "What does a web browser display?",
        ["Spreadsheets only", "Web pages", "Printer drivers", "BIOS settings"],
        1,
    ),
    ("language", "What is the plural of 'child'?", ["Childs", "Children", "Childes", "Childrens"], 1),
    ("language", "Which word is an antonym of 'hot'?", ["Warm", "Cold", "Spicy", "Bright"], 1),
    ("language", "Which word is a verb?", ["Quickly", "Happy", "Run", "Blue"], 2),
    ("language", "What is the past tense of 'go'?", ["Goed", "Gone", "Went", "Going"], 2),
]

BOOLQ = [  # (passage, question, answer)
    (
        "The library opens at nine in the morning and closes at six in the evening from Monday to Friday. On weekends it is closed.",
        "is the library open on sunday",
        False,
    ),
    (
        "The library opens at nine in the morning and closes at six in the evening from Monday to Friday. On weekends it is closed.",
        "does the library open at nine in the morning",
        True,
    ),
    (
        "Penguins are birds that cannot fly. They use their wings to swim and live mostly in the Southern Hemisphere.",
        "can penguins fly",
        False,
    ),
    (
        "Penguins are birds that cannot fly. They use their wings to swim and live mostly in the Southern Hemisphere.",
        "are penguins birds",
        True,
    ),
    (
        "The train to the coast leaves every hour from platform four. The journey takes about two hours and tickets can be bought on board.",
        "can you buy tickets on the train",
        True,
    ),
    (
        "The train to the coast leaves every hour from platform four. The journey takes about two hours and tickets can be bought on board.",
        "does the journey take five hours",
        False,
    ),
    (
        "Tomatoes were brought to Europe from the Americas in the sixteenth century. Botanically, the tomato is a fruit, although it is cooked as a vegetable.",
        "is a tomato botanically a fruit",
        True,
    ),
    (
        "Tomatoes were brought to Europe from the Americas in the sixteenth century. Botanically, the tomato is a fruit, although it is cooked as a vegetable.",
        "did tomatoes come to europe from asia",
        False,
    ),
    (
        "Maria moved to Lisbon in 2019 to work as a nurse. She lives near the river with her two cats.",
        "does maria have a dog",
        False,
    ),
    (
        "Maria moved to Lisbon in 2019 to work as a nurse. She lives near the river with her two cats.",
        "does maria work as a nurse",
        True,
    ),
    (
        "The museum is free on the first Sunday of every month. On other days an adult ticket costs twelve dollars and children enter free.",
        "do children have to pay to enter the museum",
        False,
    ),
    (
        "The museum is free on the first Sunday of every month. On other days an adult ticket costs twelve dollars and children enter free.",
        "is the museum free on the first sunday of the month",
        True,
    ),
    (
        "Mount Everest is the highest mountain above sea level. It lies on the border between Nepal and China.",
        "is mount everest in nepal",
        True,
    ),
    (
        "Mount Everest is the highest mountain above sea level. It lies on the border between Nepal and China.",
        "is mount everest in africa",
        False,
    ),
    (
        "The meeting was moved from Tuesday to Thursday because the manager was travelling. It will start at ten o'clock.",
        "will the meeting take place on tuesday",
        False,
    ),
    (
        "The meeting was moved from Tuesday to Thursday because the manager was travelling. It will start at ten o'clock.",
        "does the meeting start at ten",
        True,
    ),
    (
        "Water boils at 100 degrees Celsius at sea level. At higher altitudes, where the air pressure is lower, it boils at a lower temperature.",
        "does water boil at a lower temperature on a mountain",
        True,
    ),
    (
        "Water boils at 100 degrees Celsius at sea level. At higher altitudes, where the air pressure is lower, it boils at a lower temperature.",
        "does water always boil at 100 degrees",
        False,
    ),
    (
        "The bakery sells bread, cakes and coffee. It does not sell sandwiches, but there is a sandwich shop next door.",
        "can you buy sandwiches at the bakery",
        False,
    ),
    (
        "The bakery sells bread, cakes and coffee. It does not sell sandwiches, but there is a sandwich shop next door.",
        "does the bakery sell coffee",
        True,
    ),
    (
        "Whales are mammals. They breathe air through a blowhole and feed their young with milk.",
        "are whales fish",
        False,
    ),
    (
        "Whales are mammals. They breathe air through a blowhole and feed their young with milk.",
        "do whales breathe air",
        True,
    ),
    (
        "The new phone has a battery that lasts two days and a screen that is six inches wide. It comes in black and silver.",
        "is the phone available in red",
        False,
    ),
    (
        "The new phone has a battery that lasts two days and a screen that is six inches wide. It comes in black and silver.",
        "does the battery last two days",
        True,
    ),
    (
        "The park closes at sunset. Dogs are welcome but must be kept on a lead near the playground.",
        "are dogs allowed in the park",
        True,
    ),
    (
        "The park closes at sunset. Dogs are welcome but must be kept on a lead near the playground.",
        "is the park open all night",
        False,
    ),
    (
        "Venus is the second planet from the Sun. It is the hottest planet in the solar system because its thick atmosphere traps heat.",
        "is venus the closest planet to the sun",
        False,
    ),
    (
        "Venus is the second planet from the Sun. It is the hottest planet in the solar system because its thick atmosphere traps heat.",
        "is venus the hottest planet",
        True,
    ),
    (
        "Ben forgot his wallet at home, so his friend Sam paid for lunch. Ben promised to pay him back the next day.",
        "did ben pay for lunch",
        False,
    ),
    (
        "Ben forgot his wallet at home, so his friend Sam paid for lunch. Ben promised to pay him back the next day.",
        "did sam pay for lunch",
        True,
    ),
    (
        "The hotel has forty rooms, a small restaurant and free parking. Breakfast is included in the price of every room.",
        "is breakfast included",
        True,
    ),
    (
        "The hotel has forty rooms, a small restaurant and free parking. Breakfast is included in the price of every room.",
        "does parking cost extra",
        False,
    ),
    (
        "Spiders have eight legs and are not insects. Many spiders spin webs to catch their food.",
        "are spiders insects",
        False,
    ),
    (
        "Spiders have eight legs and are not insects. Many spiders spin webs to catch their food.",
        "do spiders have eight legs",
        True,
    ),
    (
        "The concert was cancelled because of the storm. Everyone who bought a ticket will get their money back.",
        "did the concert take place",
        False,
    ),
    (
        "The concert was cancelled because of the storm. Everyone who bought a ticket will get their money back.",
        "will ticket holders get a refund",
        True,
    ),
    (
        "Grace studies medicine at the university. She wants to become a children's doctor after she finishes her studies.",
        "does grace study law",
        False,
    ),
    (
        "Grace studies medicine at the university. She wants to become a children's doctor after she finishes her studies.",
        "does grace want to become a doctor",
        True,
    ),
    (
        "The shop is open every day except Monday. On Saturdays it closes early, at two in the afternoon.",
        "is the shop closed on monday",
        True,
    ),
    (
        "The shop is open every day except Monday. On Saturdays it closes early, at two in the afternoon.",
        "is the shop open late on saturday",
        False,
    ),
]

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Kenya", "Nairobi"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"),
    ("Cuba", "Havana"),
    ("Mexico", "Mexico City"),
    ("India", "New Delhi"),
    ("Australia", "Canberra"),
    ("Turkey", "Ankara"),
    ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"),
    ("Chile", "Santiago"),
    ("Iran", "Tehran"),
    ("Vietnam", "Hanoi"),
    ("Colombia", "Bogota"),
    ("Czech Republic", "Prague"),
    ("Switzerland", "Bern"),
    ("Nigeria", "Abuja"),
    ("Morocco", "Rabat"),
    ("Indonesia", "Jakarta"),
]


def main():
    rows = []
    for i, (s, q, c, a) in enumerate(MMLU):
        # Rotate the options so the right letter cycles A, B, C, D: a model that always answers one letter
        # scores exactly chance (25 %).
        shift = (a - i % 4) % 4
        c = c[shift:] + c[:shift]
        rows.append({"id": i, "subject": s, "question": q, "choices": c, "answer": i % 4})
    (HERE / "mini_mmlu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [{"id": i, "passage": p, "question": q, "label": int(a)} for i, (p, q, a) in enumerate(BOOLQ)]
    (HERE / "boolq_mini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [{"id": i, "country": c, "capital": k} for i, (c, k) in enumerate(CAPITALS)]
    (HERE / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
