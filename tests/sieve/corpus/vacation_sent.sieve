require "vacation";
vacation :days 3 :subject "Out of office" :addresses ["roadrunner@acme.example.com"] "I'm away until Monday.";
